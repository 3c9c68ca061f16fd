"""The index cache (a restart re-reads only what changed) and loading in worker processes."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from eprd.indexers.local import indexcache
from eprd.indexers.local.collection import PARALLEL_MIN, Collection
from eprd.model.package import LoadOptions, PackageError
from tests import pkgfactory as pf
from tests.conftest import snapshot_of, write_config

OPTIONS = LoadOptions(validate=True, require_signature=False)


def collection(root: Path, cache: Path, **kwargs: object) -> Collection:
    # What was written within the clock slack before a load is not cached (it may have been
    # written during the load): tests write packages just before loading them.
    time.sleep(2 * indexcache.CLOCK_SLACK_NS / 1e9)
    c = Collection([str(root)], OPTIONS, cache_folder=str(cache), **kwargs)
    c.load_all()
    c.save_cache()
    return c


def document(c: Collection, name: str, version: str) -> dict:
    item = snapshot_of(c).lookup(name, version)
    assert item is not None, (name, version)
    return json.loads(item.document)


@pytest.fixture
def two_packages(tmp_path: Path) -> Path:
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    pf.write_dir(root, "beta", "2.0.0")
    pf.write_zip(root, "gamma", "1.0.0")
    return root


def test_a_restart_reuses_every_unchanged_version(two_packages: Path, tmp_path: Path) -> None:
    first = collection(two_packages, tmp_path / "cache")
    assert first.reused == 0
    second = collection(two_packages, tmp_path / "cache")
    assert second.reused == 3
    for name, version in (("alpha", "1.0.0"), ("beta", "2.0.0"), ("gamma", "1.0.0")):
        assert document(second, name, version) == document(first, name, version)
    assert (
        snapshot_of(second).lookup("alpha", "1.0.0").entry
        == snapshot_of(first).lookup("alpha", "1.0.0").entry
    )


def test_an_in_place_edit_of_the_same_size_is_seen(two_packages: Path, tmp_path: Path) -> None:
    collection(two_packages, tmp_path / "cache")
    manifest = two_packages / "alpha" / "1.0.0" / "manifest.yml"
    text = manifest.read_text()
    edited = text.replace("Alpha package", "Alpho package")
    assert len(edited) == len(text)
    stat = manifest.stat()
    with open(manifest, "r+") as fh:  # rewrite in place, then restore the old mtime like `cp -p` would
        fh.write(edited)
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    again = collection(two_packages, tmp_path / "cache")
    assert again.reused == 2
    assert document(again, "alpha", "1.0.0")["title"] == "Alpho package"


def test_a_new_file_anywhere_in_the_package_is_seen(two_packages: Path, tmp_path: Path) -> None:
    collection(two_packages, tmp_path / "cache")
    extra = two_packages / "beta" / "2.0.0" / "data_stream" / "log" / "agent" / "stream" / "extra.yml.hbs"
    extra.write_text("x: 1\n")
    again = collection(two_packages, tmp_path / "cache")
    assert again.reused == 2
    assert (
        "/package/beta/2.0.0/data_stream/log/agent/stream/extra.yml.hbs"
        in document(again, "beta", "2.0.0")["assets"]
    )


def test_a_new_signature_is_seen(two_packages: Path, tmp_path: Path) -> None:
    collection(two_packages, tmp_path / "cache")
    (two_packages / "alpha" / "1.0.0.sig").write_text("-----BEGIN PGP SIGNATURE-----\n")
    (two_packages / "gamma-1.0.0.zip.sig").write_text("-----BEGIN PGP SIGNATURE-----\n")
    again = collection(two_packages, tmp_path / "cache")
    assert again.reused == 1
    assert document(again, "alpha", "1.0.0")["signature_path"] == "/epr/alpha/alpha-1.0.0.zip.sig"
    assert document(again, "gamma", "1.0.0")["signature_path"] == "/epr/gamma/gamma-1.0.0.zip.sig"


def test_a_replaced_zip_is_read_again(two_packages: Path, tmp_path: Path) -> None:
    collection(two_packages, tmp_path / "cache")
    pf.write_zip(two_packages, "gamma", "1.0.0", manifest={"title": "Gamma, rebuilt"})
    again = collection(two_packages, tmp_path / "cache")
    assert document(again, "gamma", "1.0.0")["title"] == "Gamma, rebuilt"


def test_a_rejected_version_is_cached_logged_again_and_picked_up_when_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "good", "1.0.0")
    broken = pf.write_dir(root, "bad", "1.0.0", manifest_text="name: bad\nversion: [1\n")
    collection(root, tmp_path / "cache")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="eprd.loader"):
        again = collection(root, tmp_path / "cache")
    assert again.reused == 2
    assert isinstance(again.rejected[str(broken)], PackageError)
    assert [r.getMessage() for r in caplog.records if str(broken) in str(getattr(r, "file.path", ""))]
    pf.write_dir(root, "bad", "1.0.0")
    fixed = collection(root, tmp_path / "cache")
    assert snapshot_of(fixed).lookup("bad", "1.0.0") is not None
    assert fixed.rejected == {}


def test_a_damaged_cache_file_means_a_cold_load(two_packages: Path, tmp_path: Path) -> None:
    first = collection(two_packages, tmp_path / "cache")
    assert first.cache_file is not None
    Path(first.cache_file).write_bytes(b"not a cache")
    again = collection(two_packages, tmp_path / "cache")
    assert again.reused == 0
    assert len(snapshot_of(again)) == 3


def test_the_cache_is_keyed_by_load_options(two_packages: Path, tmp_path: Path) -> None:
    collection(two_packages, tmp_path / "cache")
    strict = Collection(
        [str(two_packages)], LoadOptions(require_signature=True), cache_folder=str(tmp_path / "cache")
    )
    strict.load_all()
    assert strict.reused == 0
    assert len(snapshot_of(strict)) == 0  # nothing is signed


def test_stamps_change_when_a_folder_gains_an_entry(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    before = indexcache.stamp(str(tmp_path), ["f"])
    (folder / "new").write_text("x")
    assert indexcache.stamp(str(tmp_path), ["f"]) != before
    assert indexcache.stamp(str(tmp_path), ["missing"]) == indexcache.stamp(str(tmp_path), ["gone"])
    # A vanished parent folder stamps every name as missing.
    assert indexcache.stamp(str(tmp_path / "gone"), ["f", "new"]) == indexcache.stamp(
        str(tmp_path), ["missing", "gone"]
    )


def test_worker_processes_load_the_same_packages(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    for i in range(PARALLEL_MIN // 4 + 1):
        for version in ("1.0.0", "1.1.0", "2.0.0", "2.1.0"):
            pf.write_dir(root, f"pkg{i}", version)
    pf.write_dir(root, "broken", "1.0.0", manifest={"version": "9.9.9"})
    serial = Collection([str(root)], OPTIONS, workers=1)
    serial.load_all()
    parallel = Collection([str(root)], OPTIONS, workers=2)
    parallel.load_all()
    assert len(parallel.packages) >= PARALLEL_MIN
    assert set(parallel.packages) == set(serial.packages)
    assert set(parallel.rejected) == set(serial.rejected) == {str(root / "broken" / "1.0.0")}
    one = "pkg3/2.1.0"
    assert parallel.packages[str(root / one)].doc_tail == serial.packages[str(root / one)].doc_tail


def test_worker_processes_find_the_stale_versions_of_a_warm_start(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    for i in range(PARALLEL_MIN // 2 + 1):
        for version in ("1.0.0", "2.0.0"):
            pf.write_dir(root, f"pkg{i}", version)
    collection(root, tmp_path / "cache", workers=2)
    edited = [root / "pkg0" / "1.0.0", root / f"pkg{PARALLEL_MIN // 2}" / "2.0.0"]  # first and last
    for folder in edited:
        (folder / "docs" / "extra.md").write_text("more")
    again = collection(root, tmp_path / "cache", workers=2)
    assert again.reused == len(again.packages) - 2
    for folder in edited:
        name, version = folder.parent.name, folder.name
        assert f"/package/{name}/{version}/docs/extra.md" in document(again, name, version)["assets"]


def test_the_server_process_starts_warm_from_its_cache_dir(eprd_process, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    pf.write_dir(root, "beta", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    env = {"EPR_REQUIRE_PACKAGE_SIGNATURES": "false", "EPR_CACHE_DIR": str(tmp_path / "cache")}
    for expected_from_cache in (0, 2):
        process = eprd_process(["-config", str(config)], env)
        process.wait_healthy()
        code, _, err = process.stop()
        assert code == 0
        loaded = [json.loads(line) for line in err.splitlines() if '"packages loaded"' in line]
        assert loaded and loaded[0]["packages"]["from_cache"] == expected_from_cache, err
