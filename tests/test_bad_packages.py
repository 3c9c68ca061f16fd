"""Invalid packages (§1.3, §1.5) and package reading that must never leave the package.

eprd's own rule: an invalid package version is left out, logged once (ERROR, with its path and
the reason) and reported in ``snapshot.rejected``; every other package is still served.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pkgfactory as pf
import pytest
from pkgfactory import DROP

IDENTITY = {"Accept-Encoding": "identity"}  # bodies as sent, never compressed

SECRET = "TOP-SECRET-7f3a9c do not serve"


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url, allow_redirects=False, headers=IDENTITY) as response:
        return response.status, await response.read()


async def search_all(http: aiohttp.ClientSession, base: str) -> list[tuple[str, str]]:
    status, body = await fetch(http, f"{base}/search?all=true&prerelease=true")
    assert status == 200, body
    return [(e["name"], e["version"]) for e in json.loads(body)]


def write_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(SECRET + "\n")
    return secret


# Each builder writes one invalid package "bad" 1.0.0 under ``root`` and returns its location
# (the version folder or the zip file eprd reports).
Builder = Callable[[Path, Path], Path]


def renamed(root: Path, version: str, folder: str, **kwargs: Any) -> Path:
    written = pf.write_dir(root, "bad", version, **kwargs)
    return written.rename(written.parent / folder)


def pipelines(name: str) -> dict[str, str]:
    return {f"data_stream/log/elasticsearch/ingest_pipeline/{name}": "processors: []\n"}


def template(**inputs: Any) -> dict[str, Any]:
    return {
        "policy_templates": [
            {"name": "main", "title": "Main", "description": "Main template.", "inputs": [inputs]}
        ]
    }


def symlink_out(root: Path, tmp: Path) -> Path:
    location = pf.write_dir(root, "bad")
    (location / "docs" / "leak.md").symlink_to(write_secret(tmp))
    return location


def symlinked_manifest(root: Path, tmp: Path) -> Path:
    location = pf.write_dir(root, "bad")
    outside = tmp / "outside" / "manifest.yml"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes((location / "manifest.yml").read_bytes())
    (location / "manifest.yml").unlink()
    (location / "manifest.yml").symlink_to(outside)
    return location


def symlinked_folder_out(root: Path, tmp: Path) -> Path:
    location = pf.write_dir(root, "bad")
    (location / "kibana").symlink_to(write_secret(tmp).parent, target_is_directory=True)
    return location


def symlinked_folder_in(root: Path, tmp: Path) -> Path:
    location = pf.write_dir(root, "bad")
    (location / "guides").symlink_to(location / "docs", target_is_directory=True)
    return location


def garbage_zip(root: Path, tmp: Path) -> Path:
    path = root / "bad-1.0.0.zip"
    path.write_bytes(b"this is not a zip archive\n" * 10)
    return path


CASES: list[tuple[str, Builder, str]] = [
    ("broken-yaml", lambda r, t: pf.write_dir(r, "bad", manifest_text="name: [bad\ntitle: x\n"), "line"),
    ("manifest-list", lambda r, t: pf.write_dir(r, "bad", manifest_text="- name\n- bad\n"), "object"),
    ("manifest-scalar", lambda r, t: pf.write_dir(r, "bad", manifest_text="bad\n"), "object"),
    ("missing-manifest", lambda r, t: pf.write_dir(r, "bad", files={"manifest.yml": None}), "manifest.yml"),
    (
        "version-not-folder",
        lambda r, t: renamed(r, "1.0.1", "1.0.0"),
        "inconsistent versions (path: 1.0.0, manifest: 1.0.1)",
    ),
    ("invalid-version-dir", lambda r, t: pf.write_dir(r, "bad", manifest={"version": "1.0"}), "version"),
    (
        "invalid-version-zip",
        lambda r, t: pf.write_zip(r, "bad", "1.0.0", manifest={"version": "1.0"}),
        "invalid semantic version",
    ),
    (
        "bad-kibana-constraint",
        lambda r, t: pf.write_dir(r, "bad", manifest={"conditions": {"kibana": {"version": "~>> 8"}}}),
        "Kibana",
    ),
    (
        "empty-kibana-constraint",
        lambda r, t: pf.write_dir(r, "bad", manifest={"conditions": {"kibana": {"version": ""}}}),
        "Kibana",
    ),
    (
        "bad-agent-constraint",
        lambda r, t: pf.write_dir(r, "bad", manifest={"conditions": {"agent": {"version": "not one"}}}),
        "Agent",
    ),
    (
        "missing-readme",
        lambda r, t: pf.write_dir(r, "bad", files={"docs/README.md": None}),
        "README.md is required",
    ),
    (
        "readme-is-a-folder",
        lambda r, t: pf.write_dir(r, "bad", files={"docs/README.md": None, "docs/README.md/x.md": "x"}),
        "README.md",
    ),
    (
        "no-format-version",
        lambda r, t: pf.write_dir(r, "bad", manifest={"format_version": DROP}),
        "no format_version set",
    ),
    (
        "bad-format-version",
        lambda r, t: pf.write_dir(r, "bad", manifest={"format_version": "3.0"}),
        "3.0",
    ),
    (
        "no-title",
        lambda r, t: pf.write_dir(r, "bad", manifest={"title": DROP}),
        "no title set for package: bad",
    ),
    (
        "no-description",
        lambda r, t: pf.write_dir(r, "bad", manifest={"description": ""}),
        "no description set",
    ),
    (
        "invalid-release",
        lambda r, t: pf.write_dir(r, "bad", manifest={"release": "alpha"}),
        'invalid release: "alpha"',
    ),
    (
        "data-stream-type",
        lambda r, t: pf.write_dir(r, "bad", data_streams={"log": {"type": "events"}}),
        "type is not valid",
    ),
    (
        "data-stream-release",
        lambda r, t: pf.write_dir(r, "bad", data_streams={"log": {"release": "rc"}}),
        'invalid release: "rc"',
    ),
    (
        "data-stream-without-title",
        lambda r, t: pf.write_dir(r, "bad", data_streams={"log": {"title": DROP}}),
        "title",
    ),
    (
        "dataset-with-dash",
        lambda r, t: pf.write_dir(r, "bad", data_streams={"log": {"dataset": "bad-logs"}}),
        "bad-logs",
    ),
    (
        "missing-required-fields",
        lambda r, t: pf.write_dir(
            r, "bad", files={"data_stream/log/fields/base-fields.yml": "- name: message\n  type: text\n"}
        ),
        "data_stream.type",
    ),
    (
        "wrong-timestamp-type",
        lambda r, t: pf.write_dir(
            r,
            "bad",
            files={
                "data_stream/log/fields/base-fields.yml": pf.REQUIRED_FIELDS_YML.replace(
                    "type: date", "type: keyword"
                )
            },
        ),
        "@timestamp",
    ),
    (
        "unused-pipelines",
        lambda r, t: pf.write_dir(r, "bad", files=pipelines("custom.yml")),
        "unused pipelines",
    ),
    (
        "missing-pipeline",
        lambda r, t: pf.write_dir(r, "bad", data_streams={"log": {"ingest_pipeline": "nowhere"}}),
        "nowhere",
    ),
    ("missing-icon", lambda r, t: pf.write_dir(r, "bad", files={"img/icon.svg": None}), "/img/icon.svg"),
    (
        "missing-screenshot",
        lambda r, t: pf.write_dir(
            r, "bad", manifest={"screenshots": [{"src": "/img/shot.png", "title": "x"}]}
        ),
        "/img/shot.png",
    ),
    (
        "folder-with-dash",
        lambda r, t: pf.write_dir(r, "bad", files={"kibana/my-dashboards/a.json": "{}"}),
        "contains -: kibana/my-dashboards",
    ),
    (
        "input-without-type",
        lambda r, t: pf.write_dir(r, "bad", manifest=template(title="Lonely")),
        "type or package",
    ),
    (
        "input-with-both",
        lambda r, t: pf.write_dir(r, "bad", manifest=template(title="Both", type="logfile", package="x")),
        "but not both",
    ),
    (
        "stream-without-input",
        lambda r, t: pf.write_dir(r, "bad", data_streams={"log": {"streams": [{"title": "no input"}]}}),
        "input or package",
    ),
    (
        "template-without-name",
        lambda r, t: pf.write_dir(
            r, "bad", manifest={"policy_templates": [{"title": "No name", "description": "d"}]}
        ),
        "name",
    ),
    (
        "agentless-release",
        lambda r, t: pf.write_dir(
            r,
            "bad",
            manifest={
                "policy_templates": [
                    {
                        "name": "main",
                        "title": "Main",
                        "description": "d",
                        "deployment_modes": {"agentless": {"enabled": True, "release": "preview"}},
                    }
                ]
            },
        ),
        'invalid agentless release: "preview"',
    ),
    ("garbage-zip", garbage_zip, "zip"),
    (
        "zip-without-manifest",
        lambda r, t: pf.write_zip(r, "bad", files={"manifest.yml": None}),
        "failed to determine root directory",
    ),
    (
        "zip-dotdot-inside-root",
        lambda r, t: pf.write_zip(r, "bad", extra_entries=[("bad-1.0.0/../../escape.txt", b"x")]),
        "escape.txt",
    ),
    (
        "zip-dotdot-at-top",
        lambda r, t: pf.write_zip(r, "bad", extra_entries=[("../escape.txt", b"x")]),
        "escape.txt",
    ),
    (
        "zip-absolute-inside-root",
        lambda r, t: pf.write_zip(r, "bad", extra_entries=[("bad-1.0.0//etc/escape.txt", b"x")]),
        "escape.txt",
    ),
    (
        "zip-absolute-at-top",
        lambda r, t: pf.write_zip(r, "bad", extra_entries=[("/etc/escape.txt", b"x")]),
        "escape.txt",
    ),
    ("symlink-to-outside", symlink_out, "leak.md"),
    ("symlinked-manifest-outside", symlinked_manifest, "manifest.yml"),
    ("symlinked-folder-outside", symlinked_folder_out, "kibana"),
    ("symlinked-folder-inside", symlinked_folder_in, "guides"),
]


@pytest.mark.parametrize(("builder", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_an_invalid_package_is_left_out_and_the_others_are_served(
    serve, http, tmp_path, caplog, builder, reason
):
    root = tmp_path / "packages"
    pf.write_dir(root, "good", "1.0.0")
    pf.write_zip(root, "good_zip", "1.0.0")
    location = builder(root, tmp_path)

    with caplog.at_level(logging.WARNING):
        registry, base = await serve([root])

    assert await search_all(http, base) == [("good", "1.0.0"), ("good_zip", "1.0.0")]
    for url in ("/package/bad/1.0.0/", "/package/bad/1.0.0/docs/README.md", "/epr/bad/bad-1.0.0.zip"):
        status, body = await fetch(http, base + url)
        assert status == 404, (url, body)
    assert (await fetch(http, f"{base}/package/good/1.0.0/"))[0] == 200

    rejected = registry.snapshot.rejected
    assert [Path(e.location) for e in rejected] == [location]
    assert reason in rejected[0].reason
    # One ERROR line for it, naming the path and the reason.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    line = errors[0].getMessage() + " " + " ".join(str(v) for v in vars(errors[0]).values())
    assert str(location) in line
    assert rejected[0].reason in line


@pytest.mark.parametrize(
    ("override", "reason", "served"),
    [
        ({"format_version": DROP}, "no format_version set", "1.0.0"),
        ({"title": DROP}, "no title set", "1.0.0"),
        ({"description": DROP}, "no description set", "1.0.0"),
        ({"version": "1.0.1"}, "inconsistent versions", "1.0.1"),
        ({"icons": [{"src": "/img/missing.svg"}]}, "/img/missing.svg", "1.0.0"),
        (
            {"policy_templates": [{"name": "t", "title": "T", "description": "d", "inputs": [{}]}]},
            "type",
            "1.0.0",
        ),
    ],
    ids=["format_version", "title", "description", "version-folder", "icon-file", "input-type"],
)
async def test_switchable_checks_are_skipped_without_validation(
    serve, http, tmp_path, override, reason, served
):
    root = tmp_path / "packages"
    pf.write_dir(root, "lax", "1.0.0", manifest=override)

    registry, base = await serve([root], validate=True)
    assert reason in registry.snapshot.rejected[0].reason
    assert await search_all(http, base) == []

    registry, base = await serve([root], validate=False)
    assert registry.snapshot.rejected == ()
    assert await search_all(http, base) == [("lax", served)]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"files": {"docs/README.md": None}}, "README.md is required"),
        ({"manifest": {"release": "alpha"}}, "invalid release"),
        ({"files": pipelines("custom.json")}, "unused pipelines"),
        ({"files": {"kibana/a-b/x.json": "{}"}}, "contains -"),
        ({"manifest_text": "name: [\n"}, "line"),
        ({"manifest": {"version": "1.0"}}, "invalid package version"),
        ({"manifest": {"format_version": "3.0"}}, "3.0"),
        ({"manifest": {"conditions": {"kibana": {"version": "nope"}}}}, "Kibana"),
        ({"data_streams": {"log": {"release": "rc"}}}, 'invalid release: "rc"'),
    ],
    ids=[
        "readme",
        "release",
        "unused-pipelines",
        "folder-with-dash",
        "yaml",
        "version",
        "format-version",
        "kibana",
        "data-stream-release",
    ],
)
async def test_always_on_checks_apply_without_validation(serve, http, tmp_path, kwargs, reason):
    root = tmp_path / "packages"
    pf.write_dir(root, "strict", "1.0.0", **kwargs)
    pf.write_dir(root, "fine", "1.0.0")

    registry, base = await serve([root], validate=False)

    assert await search_all(http, base) == [("fine", "1.0.0")]
    assert len(registry.snapshot.rejected) == 1
    assert reason in registry.snapshot.rejected[0].reason


async def test_validation_flags_only_the_invalid_version_of_a_package(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "demo", "1.0.0")
    pf.write_dir(root, "demo", "1.1.0", files={"docs/README.md": None})
    pf.write_dir(root, "demo", "1.2.0")

    registry, base = await serve([root])

    assert await search_all(http, base) == [("demo", "1.0.0"), ("demo", "1.2.0")]
    status, body = await fetch(http, f"{base}/search")
    assert status == 200
    assert [(e["name"], e["version"]) for e in json.loads(body)] == [("demo", "1.2.0")]
    assert [Path(e.location).name for e in registry.snapshot.rejected] == ["1.1.0"]


async def test_unknown_categories_are_dropped_and_the_package_is_served(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "demo", "1.0.0", manifest={"categories": ["no_such_category", "security", "custom"]})

    registry, base = await serve([root])

    assert registry.snapshot.rejected == ()
    status, body = await fetch(http, f"{base}/package/demo/1.0.0/")
    assert status == 200
    assert json.loads(body)["categories"] == ["security", "custom"]
    status, body = await fetch(http, f"{base}/categories")
    assert sorted(c["id"] for c in json.loads(body)) == ["custom", "security"]


async def test_a_package_path_with_only_invalid_packages_serves_an_empty_registry(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "bad", manifest_text=": : :\n")

    registry, base = await serve([root])

    status, body = await fetch(http, f"{base}/search")
    assert (status, body) == (200, b"[]")
    assert len(registry.snapshot.rejected) == 1


# --- reading never leaves the package ---------------------------------------------------------


async def test_a_symlink_to_a_secret_is_rejected_and_never_served(serve, http, tmp_path):
    root = tmp_path / "packages"
    secret = write_secret(tmp_path)
    location = pf.write_dir(root, "leaky", "1.0.0")
    (location / "docs" / "secret.md").symlink_to(secret)
    (location / "img" / "icon.svg").unlink()
    (location / "img" / "icon.svg").symlink_to(secret)
    pf.write_dir(root, "good", "1.0.0")

    registry, base = await serve([root])

    assert [Path(e.location) for e in registry.snapshot.rejected] == [location]
    for url in (
        "/search?all=true&prerelease=true",
        "/package/leaky/1.0.0/",
        "/package/leaky/1.0.0/docs/secret.md",
        "/package/leaky/1.0.0/img/icon.svg",
        "/epr/leaky/leaky-1.0.0.zip",
        "/epr/leaky/leaky-1.0.0.tar.gz",
        "/package/good/1.0.0/../../leaky/1.0.0/docs/secret.md",
        "/package/good/1.0.0/%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
        "/package/good/1.0.0/..%2f..%2f..%2foutside%2fsecret.txt",
    ):
        status, body = await fetch(http, base + url)
        assert SECRET.encode() not in body, url
        assert status != 200 or url.startswith("/search"), (url, status)


def archive_contents(body: bytes, kind: str) -> dict[str, bytes]:
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


async def test_files_swapped_for_symlinks_after_loading_are_not_followed(serve, http, tmp_path):
    root = tmp_path / "packages"
    secret = write_secret(tmp_path)
    location = pf.write_dir(root, "demo", "1.0.0")

    registry, base = await serve([root])
    assert registry.snapshot.rejected == ()
    # After the package was loaded, a file becomes a link to a file outside the package.
    (location / "docs" / "README.md").unlink()
    (location / "docs" / "README.md").symlink_to(secret)
    (location / "changelog.yml").unlink()
    (location / "changelog.yml").symlink_to(secret)

    status, body = await fetch(http, f"{base}/package/demo/1.0.0/docs/README.md")
    assert SECRET.encode() not in body
    assert status == 404
    for url, kind in (("/epr/demo/demo-1.0.0.zip", "zip"), ("/epr/demo/demo-1.0.0.tar.gz", "tar")):
        status, body = await fetch(http, base + url)
        assert SECRET.encode() not in body
        if status == 200:
            contents = archive_contents(body, kind)
            assert contents
            assert not any(SECRET.encode() in data for data in contents.values()), url


async def test_a_symlink_inside_the_package_to_a_file_of_the_package_is_served(serve, http, tmp_path):
    root = tmp_path / "packages"
    location = pf.write_dir(root, "demo", "1.0.0")
    (location / "docs" / "copy.md").symlink_to(location / "docs" / "README.md")

    registry, base = await serve([root])

    assert registry.snapshot.rejected == ()
    status, body = await fetch(http, f"{base}/package/demo/1.0.0/docs/copy.md")
    assert (status, body) == (200, b"# demo\n\nRead me.\n")


async def test_zip_entries_outside_the_root_are_never_served(serve, http, tmp_path):
    root = tmp_path / "packages"
    entries = [*pf.zip_entries("demo", "1.0.0"), ("other/escape.txt", SECRET.encode())]
    root.mkdir()
    (root / "demo-1.0.0.zip").write_bytes(pf.zip_bytes(entries))

    registry, base = await serve([root])

    assert registry.snapshot.rejected == ()
    doc = json.loads((await fetch(http, f"{base}/package/demo/1.0.0/"))[1])
    assert not any("escape" in a for a in doc["assets"])
    for url in (
        "/package/demo/1.0.0/../other/escape.txt",
        "/package/demo/1.0.0/%2e%2e/other/escape.txt",
        "/package/demo/1.0.0/..%2fother%2fescape.txt",
    ):
        status, body = await fetch(http, base + url)
        assert SECRET.encode() not in body, url
        assert status != 200, url
