"""Rebuild the zip packages of this folder: ``python3 testdata/zips/make_zips.py``.

The archives are committed; this script only documents (and reproduces) their exact
content and entry order. Every entry gets the same fixed timestamp so the archives
are byte-for-byte reproducible.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP = (2024, 5, 17, 10, 30, 0)  # DOS time, read back as UTC: Fri, 17 May 2024 10:30:00 GMT

BASE_FIELDS = """\
- name: data_stream.type
  type: constant_keyword
- name: data_stream.dataset
  type: constant_keyword
- name: data_stream.namespace
  type: constant_keyword
- name: '@timestamp'
  type: date
"""

PROBE_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16">'
    '<circle cx="8" cy="8" r="6" fill="#2a9d4b"/></svg>\n'
)


def probe_manifest(version: str, categories: list[str], extra: str = "") -> str:
    cats = "".join(f"  - {c}\n" for c in categories)
    return f"""\
format_version: 2.5.0
name: zipped_probe
title: Zipped Probe
version: {version}
description: Network probe readings, shipped as a zip archive.
type: integration
categories:
{cats}icons:
  - src: /img/probe.svg
    title: Probe
    type: image/svg+xml
policy_templates:
  - name: probe
    title: Probe readings
    description: Collect probe readings.
    data_streams:
      - beta_ds
      - alpha_ds
    inputs:
      - type: udp
        title: Receive readings
        description: Readings over UDP.
{extra}"""


def data_stream(title: str) -> str:
    return f"""\
title: {title}
type: metrics
streams:
  - input: udp
    title: {title}
    description: {title} over UDP.
"""


# (name inside the top folder, content); None marks a directory entry.
PROBE_100 = [
    ("", None),
    ("manifest.yml", probe_manifest("1.0.0", ["network"])),
    ("docs/", None),
    ("docs/README.md", "# Zipped Probe 1.0.0\n\nReadings from network probes.\n"),
    ("img/", None),
    ("img/probe.svg", PROBE_SVG),
    ("data_stream/", None),
    ("data_stream/beta_ds/", None),
    ("data_stream/beta_ds/manifest.yml", data_stream("Beta readings")),
    ("data_stream/beta_ds/fields/", None),
    ("data_stream/beta_ds/fields/base-fields.yml", BASE_FIELDS),
    ("data_stream/alpha_ds/", None),
    ("data_stream/alpha_ds/manifest.yml", data_stream("Alpha readings")),
    ("data_stream/alpha_ds/fields/", None),
    ("data_stream/alpha_ds/fields/base-fields.yml", BASE_FIELDS),
    ("changelog.yml", "- version: 1.0.0\n  changes:\n    - description: First zip.\n      type: bugfix\n"),
]

# No directory entries at all.
PROBE_110 = [
    (
        "manifest.yml",
        probe_manifest("1.1.0", ["network", "security"], 'conditions:\n  kibana:\n    version: "^8.0.0"\n'),
    ),
    ("docs/README.md", "# Zipped Probe 1.1.0\n\nReadings from network probes, now with alerts.\n"),
    ("img/probe.svg", PROBE_SVG),
    ("data_stream/beta_ds/manifest.yml", data_stream("Beta readings")),
    ("data_stream/beta_ds/fields/base-fields.yml", BASE_FIELDS),
    ("data_stream/alpha_ds/manifest.yml", data_stream("Alpha readings")),
    ("data_stream/alpha_ds/fields/base-fields.yml", BASE_FIELDS),
    ("changelog.yml", "- version: 1.1.0\n  changes:\n    - description: Alerts.\n      type: enhancement\n"),
]

DUAL_100 = [
    ("", None),
    (
        "manifest.yml",
        """\
format_version: 3.0.0
name: dual_source
title: Dual Source (zip copy)
version: 1.0.0
description: A package published as a folder and as a zip.
type: integration
categories:
  - network
deprecated:
  since: 1.0.0
  description: Dual Source is replaced by Zipped Probe.
  replaced_by:
    package: zipped_probe
""",
    ),
    ("docs/", None),
    ("docs/README.md", "# Dual Source 1.0.0\n\nZip copy.\n"),
]

SIGNATURE = """\
-----BEGIN PGP SIGNATURE-----

iQEzBAABCAAdFiEEemlwcGVkX3Byb2JlIHRlc3Qgc2lnbmF0dXJlIDEuMC4wAAoJ
EHppcHBlZF9wcm9iZS0xLjAuMC56aXAgZGV0YWNoZWQgc2lnbmF0dXJlIHRlc3Q=
=zprb
-----END PGP SIGNATURE-----
"""


def build(name: str, top: str, entries: list[tuple[str, str | None]]) -> None:
    with zipfile.ZipFile(HERE / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, content in entries:
            info = zipfile.ZipInfo(f"{top}/{rel}", STAMP)
            if content is None:
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o100644 << 16
                archive.writestr(info, content.encode())


def main() -> None:
    build("zipped_probe-1.0.0.zip", "zipped_probe-1.0.0", PROBE_100)
    build("zipped_probe-1.1.0.zip", "zipped_probe-1.1.0", PROBE_110)
    build("dual_source-1.0.0.zip", "dual_source-1.0.0", DUAL_100)
    (HERE / "zipped_probe-1.0.0.zip.sig").write_text(SIGNATURE)


if __name__ == "__main__":
    main()
