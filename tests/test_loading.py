"""Package sources (§1.1), precedence (§1.2) and deprecation propagation (§1.4), over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pkgfactory as pf

IDENTITY = {"Accept-Encoding": "identity"}  # bodies as sent, never compressed


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, allow_redirects=False, headers=IDENTITY) as response:
        body = await response.read()
        assert response.status == 200, (url, response.status, body)
        return json.loads(body)


async def status_of(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url, allow_redirects=False, headers=IDENTITY) as response:
        await response.read()
        return response.status


async def listed(http: aiohttp.ClientSession, base: str) -> list[tuple[str, str]]:
    """Every (name, version) /search shows with all versions and prereleases."""
    entries = await get_json(http, f"{base}/search?all=true&prerelease=true")
    return [(e["name"], e["version"]) for e in entries]


# --- folder discovery ------------------------------------------------------------------------


async def test_folder_discovery_only_takes_strict_semver_folders_at_depth_two(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "demo", "1.0.0")
    pf.write_dir(root, "demo", "1.1.0-rc1")
    # Not version folders: renamed after writing a valid package into them.
    for version, folder in (("1.2.0", "v1.2.0"), ("1.3.0", "1.3"), ("1.4.0", "01.4.0"), ("1.5.0", "latest")):
        pf.write_dir(root, "demo", version).rename(root / "demo" / folder)
    # A version folder directly under the package path, and one too deep.
    pf.write_dir(root, "shallow", "3.0.0").rename(root / "3.0.0")
    (root / "shallow").rmdir()
    pf.write_dir(root / "group", "deep", "2.0.0")
    # Stray files at depth 1 and 2.
    (root / "README.md").write_text("not a package\n")
    (root / "demo" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "demo" / "notes.txt").write_text("hello\n")

    registry, base = await serve([root])

    assert await listed(http, base) == [("demo", "1.0.0"), ("demo", "1.1.0-rc1")]
    assert registry.snapshot.rejected == ()
    for path in ("demo/1.2.0", "demo/1.3.0", "demo/1.4.0", "demo/1.5.0", "shallow/3.0.0", "deep/2.0.0"):
        assert await status_of(http, f"{base}/package/{path}/") == 404, path


async def test_manifests_are_read_whole_whatever_their_size(serve, http, tmp_path):
    # Files are read in 64 KiB calls, and a short read ends a file: sizes around that are read whole.
    root = tmp_path / "packages"
    sizes = (0x10000 - 1, 0x10000, 0x10000 + 1, 3 * 0x10000, 3 * 0x10000 + 7)
    for i, size in enumerate(sizes):
        manifest = pf.write_dir(root, "big", f"1.0.{i}") / "manifest.yml"
        text = manifest.read_text()
        tail = f"description: ends at byte {size}\n"
        padding = size - len(text) - len(tail)
        manifest.write_text(text + "#" * (padding - 1) + "\n" + tail)
        assert manifest.stat().st_size == size

    registry, base = await serve([root])

    assert registry.snapshot.rejected == ()
    for i, size in enumerate(sizes):
        doc = await get_json(http, f"{base}/package/big/1.0.{i}/")
        assert doc["description"] == f"ends at byte {size}", size


async def test_the_package_folder_name_is_not_compared_with_the_manifest_name(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "realname", "1.0.0", folder="whatever_folder")

    _, base = await serve([root])

    doc = await get_json(http, f"{base}/package/realname/1.0.0/")
    assert doc["name"] == "realname"
    assert doc["path"] == "/package/realname/1.0.0"


async def test_a_version_folder_named_like_a_zip_is_a_folder_package(serve, http, tmp_path):
    # 1.0.0-a.zip is a valid semver version; the package path is reached through a symlink,
    # so files are served from the real path, resolved after the load.
    real = tmp_path / "real"
    pf.write_dir(real, "demo", "1.0.0-a.zip")
    (tmp_path / "packages").symlink_to(real)

    registry, base = await serve([tmp_path / "packages"])

    assert await listed(http, base) == [("demo", "1.0.0-a.zip")]
    assert registry.snapshot.rejected == ()
    async with http.get(f"{base}/package/demo/1.0.0-a.zip/docs/README.md", headers=IDENTITY) as response:
        assert response.status == 200
        assert await response.read() == b"# demo\n\nRead me.\n"


async def test_missing_package_paths_are_skipped(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "demo", "1.0.0")

    registry, base = await serve([tmp_path / "does-not-exist", root])

    assert await listed(http, base) == [("demo", "1.0.0")]
    assert registry.snapshot.rejected == ()


# --- zip discovery ---------------------------------------------------------------------------


async def test_zips_are_found_at_any_depth_whatever_their_file_name(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_zip(root, "top", "1.0.0")
    pf.write_zip(root / "a", "middle", "1.0.0")
    pf.write_zip(root / "a" / "b" / "c" / "d", "deep", "1.0.0")
    # Neither the archive name nor its folder name is compared with the manifest.
    pf.write_zip(root, "real", "2.0.0", filename="misnamed.zip", top="some_folder")

    registry, base = await serve([root])

    assert await listed(http, base) == [
        ("deep", "1.0.0"),
        ("middle", "1.0.0"),
        ("real", "2.0.0"),
        ("top", "1.0.0"),
    ]
    assert registry.snapshot.rejected == ()
    doc = await get_json(http, f"{base}/package/real/2.0.0/")
    assert doc["download"] == "/epr/real/real-2.0.0.zip"
    async with http.get(f"{base}/package/real/2.0.0/docs/README.md", headers=IDENTITY) as response:
        assert response.status == 200
        assert await response.text() == "# real\n\nRead me.\n"


async def test_zips_inside_folder_packages_are_package_content_not_packages(serve, http, tmp_path):
    # A deliberate difference from the reference (README): a .zip inside a version folder
    # is one of that package's files, served as an asset, and is not loaded as a package.
    root = tmp_path / "packages"
    outer = pf.write_dir(root, "outer", "1.0.0")
    pf.write_zip(outer / "kibana", "inner", "1.0.0")

    registry, base = await serve([root])

    assert await listed(http, base) == [("outer", "1.0.0")]
    assert registry.snapshot.rejected == ()
    doc = await get_json(http, f"{base}/package/outer/1.0.0/")
    assert "/package/outer/1.0.0/kibana/inner-1.0.0.zip" in doc["assets"]


async def test_zip_root_is_the_first_top_folder_holding_a_manifest_in_archive_order(serve, http, tmp_path):
    root = tmp_path / "packages"
    entries = [
        ("docs_only/", None),
        ("docs_only/notes.txt", b"no manifest here\n"),
        *pf.zip_entries("chosen", "1.0.0", top="zzz"),
        *pf.zip_entries("ignored", "1.0.0", top="aaa"),
    ]
    root.mkdir()
    (root / "bundle.zip").write_bytes(pf.zip_bytes(entries))

    registry, base = await serve([root])

    assert await listed(http, base) == [("chosen", "1.0.0")]
    assert registry.snapshot.rejected == ()
    doc = await get_json(http, f"{base}/package/chosen/1.0.0/")
    assert doc["assets"][0] == "/package/chosen/1.0.0/changelog.yml"
    assert all(a.startswith("/package/chosen/1.0.0/") for a in doc["assets"])
    assert not any("notes.txt" in a or "ignored" in a for a in doc["assets"])


async def test_zips_without_folder_entries_are_served(serve, http, tmp_path):
    root = tmp_path / "packages"
    path = pf.write_zip(root, "flat", "1.0.0", dir_entries=False)
    import zipfile

    with zipfile.ZipFile(path) as archive:
        assert not any(name.endswith("/") for name in archive.namelist())

    registry, base = await serve([root])

    assert registry.snapshot.rejected == ()
    doc = await get_json(http, f"{base}/package/flat/1.0.0/")
    assert doc["data_streams"][0]["dataset"] == "flat.log"
    assert "/package/flat/1.0.0/data_stream/log/manifest.yml" in doc["assets"]
    async with http.get(f"{base}/package/flat/1.0.0/img/icon.svg", headers=IDENTITY) as response:
        assert response.status == 200
        assert await response.text() == pf.ICON_SVG


async def test_a_file_that_is_not_a_zip_does_not_stop_the_others(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_zip(root, "good", "1.0.0")
    (root / "broken-1.0.0.zip").write_bytes(b"PK\x03\x04 truncated, not really a zip")

    _, base = await serve([root])

    assert await listed(http, base) == [("good", "1.0.0")]
    assert await status_of(http, f"{base}/package/broken/1.0.0/") == 404


# --- signatures ------------------------------------------------------------------------------


async def test_signatures_beside_folders_and_zips_give_signature_path(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "signed_dir", "1.0.0")
    (root / "signed_dir" / "1.0.0.sig").write_text("-----BEGIN PGP SIGNATURE-----\ndir\n")
    pf.write_zip(root, "signed_zip", "2.0.0")
    (root / "signed_zip-2.0.0.zip.sig").write_text("-----BEGIN PGP SIGNATURE-----\nzip\n")
    pf.write_dir(root, "unsigned", "1.0.0")
    # A signature inside the version folder is not the folder's signature.
    (root / "unsigned" / "1.0.0" / "1.0.0.sig").write_text("misplaced\n")

    _, base = await serve([root])

    entries = {e["name"]: e for e in await get_json(http, f"{base}/search")}
    assert entries["signed_dir"]["signature_path"] == "/epr/signed_dir/signed_dir-1.0.0.zip.sig"
    assert entries["signed_zip"]["signature_path"] == "/epr/signed_zip/signed_zip-2.0.0.zip.sig"
    assert "signature_path" not in entries["unsigned"]
    doc = await get_json(http, f"{base}/package/signed_zip/2.0.0/")
    assert doc["signature_path"] == "/epr/signed_zip/signed_zip-2.0.0.zip.sig"
    async with http.get(f"{base}/epr/signed_dir/signed_dir-1.0.0.zip.sig", headers=IDENTITY) as response:
        assert response.status == 200
        assert await response.text() == "-----BEGIN PGP SIGNATURE-----\ndir\n"
    async with http.get(f"{base}/epr/signed_zip/signed_zip-2.0.0.zip.sig", headers=IDENTITY) as response:
        assert response.status == 200
        assert await response.text() == "-----BEGIN PGP SIGNATURE-----\nzip\n"


async def test_required_signatures_reject_only_unsigned_versions(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "demo", "1.0.0")
    (root / "demo" / "1.0.0.sig").write_text("sig\n")
    unsigned_dir = pf.write_dir(root, "demo", "1.1.0")
    pf.write_zip(root, "zipped", "1.0.0")
    (root / "zipped-1.0.0.zip.sig").write_text("sig\n")
    unsigned_zip = pf.write_zip(root, "zipped", "1.1.0")

    registry, base = await serve([root], require_signature=True)

    assert await listed(http, base) == [("demo", "1.0.0"), ("zipped", "1.0.0")]
    reasons = {Path(e.location): e.reason for e in registry.snapshot.rejected}
    assert set(reasons) == {unsigned_dir, unsigned_zip}
    assert "package demo-1.1.0 is missing a required signature file" in reasons[unsigned_dir]
    assert "package zipped-1.1.0 is missing a required signature file" in reasons[unsigned_zip]
    assert await status_of(http, f"{base}/package/demo/1.1.0/") == 404


async def test_unsigned_packages_are_served_when_signatures_are_not_required(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_dir(root, "demo", "1.0.0")

    registry, base = await serve([root], require_signature=False)

    assert await listed(http, base) == [("demo", "1.0.0")]
    assert registry.snapshot.rejected == ()


# --- precedence ------------------------------------------------------------------------------


async def test_duplicate_folders_first_package_path_wins(serve, http, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    pf.write_dir(first, "demo", "1.0.0", manifest={"title": "From first"})
    pf.write_dir(second, "demo", "1.0.0", manifest={"title": "From second"})
    pf.write_dir(second, "demo", "1.1.0", manifest={"title": "Only in second"})

    _, base = await serve([first, second])
    assert (await get_json(http, f"{base}/package/demo/1.0.0/"))["title"] == "From first"
    entries = await get_json(http, f"{base}/search?all=true")
    assert [(e["version"], e["title"]) for e in entries] == [
        ("1.0.0", "From first"),
        ("1.1.0", "Only in second"),
    ]

    _, base = await serve([second, first])
    assert (await get_json(http, f"{base}/package/demo/1.0.0/"))["title"] == "From second"


async def test_duplicate_zips_first_package_path_wins(serve, http, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    pf.write_zip(first, "demo", "1.0.0", manifest={"title": "Zip in first"})
    pf.write_zip(second / "nested", "demo", "1.0.0", manifest={"title": "Zip in second"})

    _, base = await serve([second, first])

    assert (await get_json(http, f"{base}/package/demo/1.0.0/"))["title"] == "Zip in second"
    assert await listed(http, base) == [("demo", "1.0.0")]


async def test_a_zip_wins_over_a_folder_even_from_a_later_package_path(serve, http, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    pf.write_dir(first, "demo", "1.0.0", manifest={"title": "Folder in first"})
    pf.write_zip(second, "demo", "1.0.0", manifest={"title": "Zip in second"})

    _, base = await serve([first, second])

    doc = await get_json(http, f"{base}/package/demo/1.0.0/")
    assert doc["title"] == "Zip in second"
    # The zip's archive order shows in the assets: folders-first walk vs archive entry order.
    entries = await get_json(http, f"{base}/search?all=true")
    assert [(e["name"], e["version"], e["title"]) for e in entries] == [("demo", "1.0.0", "Zip in second")]
    async with http.get(f"{base}/epr/demo/demo-1.0.0.zip", headers=IDENTITY) as response:
        assert response.status == 200
        assert await response.read() == (second / "demo-1.0.0.zip").read_bytes()


# --- deprecation -----------------------------------------------------------------------------


def deprecated(since: str, description: str) -> dict[str, Any]:
    return {"since": since, "description": description, "replaced_by": {"package": "successor"}}


async def test_highest_deprecated_version_is_copied_to_every_version_of_the_same_source(
    serve, http, tmp_path
):
    root = tmp_path / "packages"
    pf.write_dir(root, "old", "1.0.0")
    pf.write_dir(root, "old", "1.1.0", manifest={"deprecated": deprecated("1.1.0", "first notice")})
    pf.write_dir(root, "old", "1.2.0", manifest={"deprecated": deprecated("1.2.0", "final notice")})
    pf.write_dir(root, "old", "2.0.0")
    pf.write_dir(root, "fresh", "1.0.0")

    _, base = await serve([root])

    final = {"since": "1.2.0", "description": "final notice", "replaced_by": {"package": "successor"}}
    entries = await get_json(http, f"{base}/search?all=true")
    assert [(e["name"], e["version"], e.get("deprecated")) for e in entries] == [
        ("fresh", "1.0.0", None),
        ("old", "1.0.0", final),
        ("old", "1.1.0", final),
        ("old", "1.2.0", final),
        ("old", "2.0.0", final),
    ]
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        assert (await get_json(http, f"{base}/package/old/{version}/"))["deprecated"] == final
    assert "deprecated" not in await get_json(http, f"{base}/package/fresh/1.0.0/")


async def test_deprecation_does_not_cross_from_zips_to_folders(serve, http, tmp_path):
    root = tmp_path / "packages"
    pf.write_zip(root, "mixed", "1.0.0", manifest={"deprecated": deprecated("1.0.0", "zip notice")})
    pf.write_zip(root, "mixed", "1.1.0")
    pf.write_dir(root, "mixed", "2.0.0")
    pf.write_dir(root, "mixed", "2.1.0", manifest={"deprecated": deprecated("2.1.0", "folder notice")})
    pf.write_dir(root, "mixed", "3.0.0")
    pf.write_dir(root, "other", "1.0.0")
    pf.write_zip(root, "other", "1.1.0", manifest={"deprecated": deprecated("1.1.0", "zip only")})

    _, base = await serve([root])

    entries = await get_json(http, f"{base}/search?all=true")
    notices = {(e["name"], e["version"]): (e.get("deprecated") or {}).get("description") for e in entries}
    assert notices == {
        ("mixed", "1.0.0"): "zip notice",
        ("mixed", "1.1.0"): "zip notice",
        ("mixed", "2.0.0"): "folder notice",
        ("mixed", "2.1.0"): "folder notice",
        ("mixed", "3.0.0"): "folder notice",
        ("other", "1.0.0"): None,
        ("other", "1.1.0"): "zip only",
    }
