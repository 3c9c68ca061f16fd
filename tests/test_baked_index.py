"""A baked index (``eprd -dry-run -cache-dir DIR``) stays valid after a copy that keeps sizes and mtimes.

Container image layers, ``tar`` and ``cp -a`` give every file a new inode and change time;
the index must still be used, and must still notice a file that changed after baking.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from eprd.indexers.local import indexcache
from tests import pkgfactory as pf
from tests.conftest import ROOT, write_config

VERSIONS = [("alpha", "1.0.0"), ("alpha", "1.1.0"), ("beta", "2.0.0")]


def bake(config: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPR_")}
    return subprocess.run(
        [sys.executable, "-m", "eprd", "-dry-run", "-config", str(config), "-cache-dir", str(cache)],
        env={**env, "EPR_REQUIRE_PACKAGE_SIGNATURES": "false"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def inodes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.rglob("*")}


def set_aside(root: Path, work: Path) -> None:
    """Move the originals away rather than deleting them, so that the copy cannot reuse their inodes."""
    root.rename(work / f"old-{len(list(work.glob('old-*')))}")


def recopy_tar_cli(root: Path, work: Path) -> None:
    """GNU tar's default format keeps mtimes in whole seconds, as image layers do."""
    archive = work / "packages.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(root.parent), root.name], check=True)
    set_aside(root, work)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(root.parent)], check=True)


def recopy_image_layer(root: Path, work: Path) -> None:
    """As container image layers are written (containerd, BuildKit): mtimes truncated to seconds."""
    archive = work / "packages.tar"

    def truncate(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = int(info.mtime)
        return info

    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=root.name, filter=truncate)
    set_aside(root, work)
    with tarfile.open(archive) as tar:
        tar.extractall(root.parent, filter="fully_trusted")


def recopy_cp_a(root: Path, work: Path) -> None:
    backup = work / "backup"
    subprocess.run(["cp", "-a", str(root), str(backup)], check=True)
    set_aside(root, work)
    subprocess.run(["cp", "-a", str(backup), str(root)], check=True)


@pytest.fixture
def baked(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "packages"
    for name, version in VERSIONS:
        pf.write_dir(root, name, version)
    config = write_config(tmp_path / "config.yml", [root])
    cache = tmp_path / "baked"
    time.sleep(2 * indexcache.CLOCK_SLACK_NS / 1e9)  # written just before: see indexcache.Pending
    result = bake(config, cache)
    assert result.returncode == 0, result.stderr
    assert "index written to" in result.stdout
    assert "3 package versions valid, 0 invalid" in result.stdout
    assert list((cache / "index").glob("index-*.bin"))
    return root, config, cache


def start(eprd_process, config: Path, cache: Path) -> tuple[dict, str]:
    """Serve once from ``cache``; the ``packages loaded`` line and the stderr."""
    process = eprd_process(
        ["-config", str(config), "-cache-dir", str(cache), "-package-paths-enable-watcher=false"],
        {"EPR_REQUIRE_PACKAGE_SIGNATURES": "false"},
    )
    process.wait_healthy()
    import urllib.request

    with urllib.request.urlopen(process.base + "/package/alpha/1.0.0/", timeout=10) as response:
        document = json.loads(response.read())
    code, _, err = process.stop()
    assert code == 0, err
    loaded = [json.loads(line) for line in err.splitlines() if '"packages loaded"' in line]
    assert loaded, err
    return {"loaded": loaded[0], "document": document}, err


RECOPIES = {"tar": recopy_tar_cli, "image-layer": recopy_image_layer, "cp-a": recopy_cp_a}


@pytest.mark.parametrize("recopy", sorted(RECOPIES))
def test_a_baked_index_is_used_after_a_copy(eprd_process, baked, tmp_path: Path, recopy: str) -> None:
    root, config, cache = baked
    if recopy != "image-layer" and shutil.which(recopy.split("-")[0]) is None:
        pytest.skip(f"no {recopy} here")
    before = inodes(root)
    RECOPIES[recopy](root, tmp_path)
    assert inodes(root).keys() == before.keys()
    # new inodes (and change times): what an image layer gives
    assert all(inodes(root)[p] != before[p] for p in before)

    served, _ = start(eprd_process, config, cache)
    assert served["loaded"]["packages"]["from_cache"] == len(VERSIONS)
    assert served["loaded"]["packages"]["served"] == len(VERSIONS)
    assert served["document"]["name"] == "alpha"


def test_a_file_changed_after_baking_is_read_again(eprd_process, baked, tmp_path: Path) -> None:
    root, config, cache = baked
    recopy_image_layer(root, tmp_path)
    manifest = root / "alpha" / "1.0.0" / "manifest.yml"
    manifest.write_text(manifest.read_text().replace("Alpha package", "Alpha package, edited"))

    served, _ = start(eprd_process, config, cache)
    assert served["loaded"]["packages"]["from_cache"] == len(VERSIONS) - 1
    assert served["document"]["title"] == "Alpha package, edited"


def test_a_same_size_edit_with_a_new_mtime_is_read_again(eprd_process, baked) -> None:
    root, config, cache = baked
    manifest = root / "alpha" / "1.0.0" / "manifest.yml"
    text = manifest.read_text()
    edited = text.replace("Alpha package", "Alpho package")
    assert len(edited) == len(text)
    old = manifest.stat().st_mtime_ns
    manifest.write_text(edited)
    os.utime(manifest, ns=(old + 1_000_000, old + 1_000_000))  # a millisecond later, same second

    served, _ = start(eprd_process, config, cache)
    assert served["loaded"]["packages"]["from_cache"] == len(VERSIONS) - 1
    assert served["document"]["title"] == "Alpho package"


def test_a_new_file_after_baking_is_read_again(eprd_process, baked) -> None:
    root, config, cache = baked
    (root / "beta" / "2.0.0" / "docs" / "extra.md").write_text("# more\n")
    served, _ = start(eprd_process, config, cache)
    assert served["loaded"]["packages"]["from_cache"] == len(VERSIONS) - 1


def test_the_dry_run_rebakes_only_what_changed(baked) -> None:
    root, config, cache = baked
    manifest = root / "beta" / "2.0.0" / "manifest.yml"
    manifest.write_text(manifest.read_text() + "\n")
    time.sleep(2 * indexcache.CLOCK_SLACK_NS / 1e9)
    result = bake(config, cache)
    assert result.returncode == 0, result.stderr
    loaded = [json.loads(line) for line in result.stderr.splitlines() if '"packages loaded"' in line]
    assert loaded and loaded[0]["packages"]["from_cache"] == len(VERSIONS) - 1


def test_a_dry_run_without_cache_dir_writes_no_index(tmp_path: Path) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPR_")}
    result = subprocess.run(
        [sys.executable, "-m", "eprd", "-dry-run", "-config", str(config)],
        env={**env, "EPR_REQUIRE_PACKAGE_SIGNATURES": "false", "TMPDIR": str(tmp_path / "tmp")},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "index written" not in result.stdout
    assert not (tmp_path / "tmp").exists()


def test_the_seconds_tolerance_is_only_for_whole_second_mtimes() -> None:
    from array import array

    stamped = array("q", [10, 5_123_456_789, -2, 7_000_000_001]).tobytes()
    truncated = array("q", [10, 5_000_000_000, -2, 7_000_000_000]).tobytes()
    assert indexcache._same_to_the_second(truncated, stamped)
    other_second = array("q", [10, 6_000_000_000, -2, 7_000_000_000]).tobytes()
    assert not indexcache._same_to_the_second(other_second, stamped)
    sub_second_change = array("q", [10, 5_100_000_000, -2, 7_000_000_001]).tobytes()
    assert not indexcache._same_to_the_second(sub_second_change, stamped)
    other_size = array("q", [11, 5_000_000_000, -2, 7_000_000_000]).tobytes()
    assert not indexcache._same_to_the_second(other_size, stamped)
