"""Write small, valid packages (folders or zip archives) for tests, with any part overridable.

Every builder starts from a package that eprd loads with validation on and that has one
``logs`` data stream. Tests change only what they are about:

* ``manifest={...}`` merges keys into the default manifest (``DROP`` removes a key),
  ``manifest_text="..."`` replaces ``manifest.yml`` verbatim (for YAML syntax tests);
* ``data_streams={"folder": {...}}`` replaces the data streams (values are manifest
  overrides merged into the default data stream manifest, or raw YAML text);
* ``files={"rel/path": "text" | b"bytes" | None}`` adds, replaces or (``None``) removes files.
"""

from __future__ import annotations

import copy
import io
import zipfile
from pathlib import Path
from typing import Any

import yaml

DROP = object()  # a manifest override value that removes the key

REQUIRED_FIELDS_YML = """\
- name: data_stream.type
  type: constant_keyword
- name: data_stream.dataset
  type: constant_keyword
- name: data_stream.namespace
  type: constant_keyword
- name: '@timestamp'
  type: date
"""

ICON_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><circle r="8"/></svg>\n'


def default_manifest(name: str, version: str) -> dict[str, Any]:
    return {
        "format_version": "3.0.0",
        "name": name,
        "title": f"{name.capitalize()} package",
        "version": version,
        "description": f"The {name} package, written by a test.",
        "type": "integration",
        "categories": ["custom"],
        "conditions": {"kibana": {"version": "^8.0.0"}},
        "owner": {"github": "elastic/tests", "type": "elastic"},
        "icons": [{"src": "/img/icon.svg", "title": "Icon", "size": "32x32", "type": "image/svg+xml"}],
        "policy_templates": [
            {
                "name": "main",
                "title": "Main template",
                "description": "Collect things.",
                "inputs": [{"type": "logfile", "title": "Collect logs", "description": "Log files."}],
            }
        ],
    }


def default_data_stream(title: str = "Logs") -> dict[str, Any]:
    return {
        "type": "logs",
        "title": title,
        "streams": [{"input": "logfile", "title": "Log files", "description": "Read log files."}],
    }


def merge(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def package_files(
    name: str = "demo",
    version: str = "1.0.0",
    *,
    manifest: dict[str, Any] | None = None,
    manifest_text: str | None = None,
    data_streams: dict[str, dict[str, Any] | str] | None = None,
    files: dict[str, str | bytes | None] | None = None,
) -> dict[str, bytes]:
    """Relative path -> content of a package."""
    out: dict[str, str | bytes] = {
        "manifest.yml": manifest_text
        if manifest_text is not None
        else dump(merge(default_manifest(name, version), manifest)),
        "docs/README.md": f"# {name}\n\nRead me.\n",
        "img/icon.svg": ICON_SVG,
        "changelog.yml": f'- version: "{version}"\n  changes: []\n',
    }
    for folder, ds in (data_streams if data_streams is not None else {"log": {}}).items():
        base = f"data_stream/{folder}"
        out[f"{base}/manifest.yml"] = ds if isinstance(ds, str) else dump(merge(default_data_stream(), ds))
        out[f"{base}/fields/base-fields.yml"] = REQUIRED_FIELDS_YML
        out[f"{base}/agent/stream/stream.yml.hbs"] = "paths: {{paths}}\n"
    for path, content in (files or {}).items():
        if content is None:
            out.pop(path, None)
        else:
            out[path] = content
    return {path: content.encode() if isinstance(content, str) else content for path, content in out.items()}


def write_dir(
    root: Path, name: str = "demo", version: str = "1.0.0", *, folder: str | None = None, **kwargs: Any
) -> Path:
    """Write ``<root>/<folder or name>/<version>/`` and return the version folder."""
    target = Path(root) / (folder or name) / version
    for rel, content in package_files(name, version, **kwargs).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return target


def zip_bytes(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A zip archive with ``entries`` in this order; ``None`` content makes a folder entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
            info.external_attr = (0o40755 << 16) | 0x10 if content is None else 0o100644 << 16
            archive.writestr(info, content or b"")
    return buffer.getvalue()


def zip_entries(
    name: str = "demo",
    version: str = "1.0.0",
    *,
    top: str | None = None,
    dir_entries: bool = True,
    **kwargs: Any,
) -> list[tuple[str, bytes | None]]:
    """Archive entries of a package under ``top/`` (default ``<name>-<version>/``)."""
    top = top if top is not None else f"{name}-{version}"
    files = package_files(name, version, **kwargs)
    entries: list[tuple[str, bytes | None]] = []
    seen: set[str] = set()
    for rel in sorted(files, key=lambda p: p.split("/")):
        if dir_entries:
            parts = f"{top}/{rel}".split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folder = "/".join(parts[:i]) + "/"
                if folder not in seen:
                    seen.add(folder)
                    entries.append((folder, None))
        entries.append((f"{top}/{rel}", files[rel]))
    return entries


def write_zip(
    root: Path,
    name: str = "demo",
    version: str = "1.0.0",
    *,
    filename: str | None = None,
    extra_entries: list[tuple[str, bytes | None]] | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``<root>/<filename or name-version.zip>`` and return its path."""
    path = Path(root) / (filename or f"{name}-{version}.zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zip_bytes(zip_entries(name, version, **kwargs) + list(extra_entries or [])))
    return path
