"""Download archives through a real server: concurrent first downloads with eviction always running,
a cache folder that cannot be used, and file names that are legal on disk but odd in URLs.

Every download is checked by opening the archive (zipfile, tarfile) and comparing its files with
what was written to disk. Eviction is made to delete for real by aging the cached archives from
outside while downloads run, as time passing or a second eprd sharing the folder would.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import shutil
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from eprd.catalog.snapshot import Snapshot
from eprd.config import Config
from eprd.http.registry import Registry
from eprd.indexers.combined import build
from eprd.indexers.local.archives import TAR_GZ, ZIP, ArchiveStore, write_tar_gz
from eprd.indexers.local.collection import Collection
from eprd.indexers.local.indexer import load_snapshot, local_indexers
from eprd.model.files import DirFiles
from eprd.model.package import LoadOptions
from tests import pkgfactory as pf
from tests.conftest import write_config

PACKAGES = 40
PARALLEL = 12
ROUNDS = 3
VERSION = "1.0.0"
CACHE_WARNING = "archive cache cannot be used"
# Warnings only: the fixture reads the process's output when it stops, and a full pipe would stall it.
QUIET = ("-log-level", "warn")


def write_packages(root: Path, count: int, blob: int = 2000) -> dict[str, dict[str, bytes]]:
    """``count`` small folder packages; returns name -> (relative path -> content) as written."""
    rng = random.Random(count * 7919 + blob)
    expected = {}
    for i in range(count):
        name = f"pkg{i:02d}"
        extra = {
            "docs/extra.md": "".join(rng.choice("abc \n") for _ in range(rng.randint(100, 3000))),
            "kibana/blob.bin": rng.randbytes(blob),  # incompressible: archives have a real size
        }
        pf.write_dir(root, name, VERSION, files=extra)
        expected[name] = pf.package_files(name, VERSION, files=extra)
    return expected


def archive_files(fmt: str, body: bytes, top: str) -> dict[str, bytes]:
    """The files of a downloaded archive (relative to ``top``), checking that it is whole and valid."""
    out: dict[str, bytes] = {}
    if fmt == ZIP:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.testzip() is None
            for info in archive.infolist():
                assert info.filename.startswith(f"{top}/"), info.filename
                if not info.is_dir():
                    out[info.filename[len(top) + 1 :]] = archive.read(info)
        return out
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        for member in archive.getmembers():
            assert member.name.startswith(f"{top}/"), member.name
            if member.isfile():
                out[member.name[len(top) + 1 :]] = archive.extractfile(member).read()
    return out


async def download_all(
    http: aiohttp.ClientSession, base: str, names: list[str], parallel: int = PARALLEL
) -> list[tuple[str, str, int, bytes]]:
    """Every package in both formats, ``parallel`` at a time, in a shuffled order."""
    gate = asyncio.Semaphore(parallel)
    jobs = [(name, fmt) for name in names for fmt in (ZIP, TAR_GZ)]
    random.shuffle(jobs)

    async def one(name: str, fmt: str) -> tuple[str, str, int, bytes]:
        async with gate, http.get(f"{base}/epr/{name}/{name}-{VERSION}.{fmt}") as response:
            return name, fmt, response.status, await response.read()

    return await asyncio.gather(*(one(name, fmt) for name, fmt in jobs))


def check_downloads(
    results: list[tuple[str, str, int, bytes]], expected: dict[str, dict[str, bytes]]
) -> None:
    statuses = [(name, fmt, status) for name, fmt, status, _ in results if status != 200]
    assert not statuses, f"downloads that did not answer 200: {statuses}"
    for name, fmt, _, body in results:
        assert archive_files(fmt, body, f"{name}-{VERSION}") == expected[name], (name, fmt)


@contextlib.contextmanager
def aging(folder: Path) -> Iterator[None]:
    """Keep making the cached archives look long unused, so that every eviction deletes them."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if not entry.name.startswith("."):
                        with contextlib.suppress(OSError):
                            os.utime(entry.path, (1_000_000, 1_000_000))
            stop.wait(0.002)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def registry_for(root: Path, store: ArchiveStore) -> Registry:
    """A registry serving the packages under ``root`` through the local indexers, downloads from ``store``."""
    collection = Collection([str(root)], LoadOptions(require_signature=False))
    collection.load_all()
    indexers = local_indexers(collection, store)
    snapshot: Snapshot = build(indexers)
    return Registry(Config(package_paths=(str(root),)), snapshot, indexers)


def use_store(registry: Registry, store: ArchiveStore) -> None:
    for indexer in registry.indexers.values():
        indexer.archives = store  # type: ignore[attr-defined]


# --- concurrent first downloads with eviction running -------------------------------------------


async def test_concurrent_first_downloads_with_constant_eviction_all_answer_whole_archives(
    tmp_path, serve, http
):
    expected = write_packages(tmp_path / "packages", PACKAGES)
    registry = registry_for(tmp_path / "packages", ArchiveStore(str(tmp_path / "unused")))
    _, base = await serve(registry=registry)
    for round_ in range(ROUNDS):
        folder = tmp_path / f"archives-{round_}"  # a fresh cache: every download is a first one
        store = ArchiveStore(str(folder), max_bytes=1)
        store.recent_s = 0.0  # evict whatever is not being built, however recent
        use_store(registry, store)
        with aging(folder):
            results = await download_all(http, base, sorted(expected))
        check_downloads(results, expected)


async def test_concurrent_first_downloads_from_the_eprd_process_with_a_tiny_cache(
    tmp_path, eprd_process, http
):
    expected = write_packages(tmp_path / "packages", PACKAGES)
    config = write_config(tmp_path / "config.yml", [tmp_path / "packages"])
    process = eprd_process(
        ["-config", str(config), "-require-package-signatures=false", "-archive-cache-size", "1", *QUIET]
    )
    await wait_healthy(process, http)
    folder = tmp_path / "cache" / "archives"
    for _ in range(2):
        with aging(folder):
            results = await download_all(http, process.base, sorted(expected))
        check_downloads(results, expected)
        for entry in os.scandir(folder):  # the next round's downloads are first downloads again
            if not entry.name.startswith("."):
                os.unlink(entry.path)
    code, _, stderr = await asyncio.to_thread(process.stop)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "cannot build archive" not in stderr


async def wait_healthy(process, http: aiohttp.ClientSession, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.proc.poll() is None, process.stderr_text()
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(process.base + "/health") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise AssertionError("eprd did not become healthy")


async def test_a_cached_archive_keeps_its_validators_when_it_is_used_again(tmp_path, serve, http):
    write_packages(tmp_path / "packages", 1)
    registry = registry_for(tmp_path / "packages", ArchiveStore(str(tmp_path / "archives")))
    _, base = await serve(registry=registry)
    url = f"{base}/epr/pkg00/pkg00-{VERSION}.tar.gz"
    async with http.get(url) as first:
        assert first.status == 200
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    await asyncio.sleep(0.05)
    async with http.get(url) as again:
        assert again.status == 200
        assert (again.headers["ETag"], again.headers["Last-Modified"]) == (etag, modified)
    async with http.get(url, headers={"If-None-Match": etag}) as unchanged:
        assert unchanged.status == 304
    async with http.get(url, headers={"If-Range": etag, "Range": "bytes=0-9"}) as resumed:
        assert resumed.status == 206 and len(await resumed.read()) == 10


# --- eviction itself ------------------------------------------------------------------------------


async def test_eviction_removes_abandoned_builds_and_leaves_other_files_alone(tmp_path):
    root = tmp_path / "packages"
    write_packages(root, 1)
    folder = tmp_path / "archives"
    store = ArchiveStore(str(folder), max_bytes=1)
    abandoned = folder / ".building-dead"  # left by a process killed while building
    abandoned.write_bytes(b"x" * 100)
    os.utime(abandoned, (1_000_000, 1_000_000))
    in_progress = folder / ".building-live"  # another process is writing it now
    in_progress.write_bytes(b"x" * 100)
    foreign = folder / "notes.txt"
    foreign.write_bytes(b"not an archive")
    os.utime(foreign, (1_000_000, 1_000_000))
    old = folder / ("0" * 32 + ".zip")
    old.write_bytes(b"an old archive")
    os.utime(old, (1_000_000, 1_000_000))
    pulled = folder / ("remote-" + "a" * 64 + ".zip.sig")  # proxy mode's files share the folder and its size
    pulled.write_bytes(b"a signature")
    os.utime(pulled, (1_000_000, 1_000_000))
    package = next(iter(load_snapshot([str(root)], LoadOptions(require_signature=False)).packages.values()))
    path = await store.get(package.package, TAR_GZ)
    assert os.path.exists(path)
    assert not abandoned.exists() and not old.exists() and not pulled.exists()
    assert in_progress.exists() and foreign.exists()


# --- a cache folder that cannot be used -----------------------------------------------------------


@pytest.fixture
def unusable_folder(request, tmp_path) -> Iterator[Path]:
    """An archive folder that cannot be written, in the way the test's parameter says."""
    kind = request.param
    if kind == "under-a-file":
        (tmp_path / "plain-file").write_text("a file where a folder should be")
        yield tmp_path / "plain-file" / "archives"
    elif kind == "read-only":
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        immutable = os.geteuid() == 0  # root ignores permission bits: make the folder immutable
        if immutable and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            folder.chmod(0o755)
            pytest.skip("root, and chattr +i does not work here")
        yield folder
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)
    else:  # full: a small tmpfs, smaller than any archive
        folder = tmp_path / "full"
        folder.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)])
        if mounted.returncode:
            pytest.skip("cannot mount a tmpfs here")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("unusable_folder", ["under-a-file", "read-only", "full"], indirect=True)
async def test_downloads_succeed_when_the_cache_folder_cannot_be_used(
    tmp_path, serve, http, unusable_folder, caplog
):
    expected = write_packages(tmp_path / "packages", 6, blob=40_000)
    with caplog.at_level(logging.WARNING, logger="eprd.archives"):
        store = ArchiveStore(str(unusable_folder), max_bytes=1)  # must not raise
        registry = registry_for(tmp_path / "packages", store)
        _, base = await serve(registry=registry)
        for _ in range(2):
            results = await download_all(http, base, sorted(expected), parallel=4)
            check_downloads(results, expected)
    warnings = [r for r in caplog.records if r.name == "eprd.archives" and CACHE_WARNING in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    if unusable_folder.is_dir():
        assert not [e for e in os.listdir(unusable_folder) if e != "lost+found"]  # no partial archive left


async def test_the_cache_is_used_again_once_its_folder_can_be_made(tmp_path, serve, http, caplog):
    class QuickRetry(ArchiveStore):
        cache_retry_s = 0.0

    expected = write_packages(tmp_path / "packages", 1)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    store = QuickRetry(str(blocker / "archives"))
    _, base = await serve(registry=registry_for(tmp_path / "packages", store))
    url = f"{base}/epr/pkg00/pkg00-{VERSION}.zip"
    async with http.get(url) as response:
        assert response.status == 200
        assert archive_files(ZIP, await response.read(), f"pkg00-{VERSION}") == expected["pkg00"]
    blocker.unlink()
    with caplog.at_level(logging.INFO, logger="eprd.archives"):
        async with http.get(url) as response:
            assert response.status == 200
            assert archive_files(ZIP, await response.read(), f"pkg00-{VERSION}") == expected["pkg00"]
    assert [name for name in os.listdir(blocker / "archives") if name.endswith(".zip")]
    assert any("archive cache can be used again" in r.getMessage() for r in caplog.records)


async def test_eprd_starts_and_serves_downloads_with_a_cache_dir_under_a_file(tmp_path, eprd_process, http):
    expected = write_packages(tmp_path / "packages", 3)
    (tmp_path / "plain-file").write_text("a file where the cache folder should be")
    config = write_config(tmp_path / "config.yml", [tmp_path / "packages"])
    process = eprd_process(
        ["-config", str(config), "-require-package-signatures=false", *QUIET],
        env={"EPR_CACHE_DIR": str(tmp_path / "plain-file" / "cache")},
    )
    await wait_healthy(process, http)
    for _ in range(2):
        check_downloads(await download_all(http, process.base, sorted(expected), parallel=3), expected)
    code, _, stderr = await asyncio.to_thread(process.stop)
    assert code == 0, stderr
    assert sum(CACHE_WARNING in line for line in stderr.splitlines()) == 1, stderr
    assert "Traceback" not in stderr


# --- odd file names ------------------------------------------------------------------------------

ODD_NAMES = [
    "docs/%2e%2e.md",
    "docs/\\x.md",
    "docs/q?x.md",
    "docs/with space.md",
    "docs/ünïcødé ✓.md",
    "a#b/c&d.md",
]


async def test_downloads_of_folder_packages_with_odd_file_names(tmp_path, serve, http):
    extra = {name: f"content of {name}\n" for name in ODD_NAMES}
    pf.write_dir(tmp_path / "packages", "odd", VERSION, files=extra)
    expected = pf.package_files("odd", VERSION, files=extra)
    _, base = await serve(registry=registry_for(tmp_path / "packages", ArchiveStore(str(tmp_path / "arc"))))
    for fmt in (ZIP, TAR_GZ):
        async with http.get(f"{base}/epr/odd/odd-{VERSION}.{fmt}") as response:
            assert response.status == 200, fmt
            assert archive_files(fmt, await response.read(), f"odd-{VERSION}") == expected


def test_equal_content_gives_equal_tar_gz_bytes(tmp_path):
    write_packages(tmp_path / "packages", 1)
    files = DirFiles(str(tmp_path / "packages" / "pkg00" / VERSION))
    first, second = io.BytesIO(), io.BytesIO()
    write_tar_gz(files, "pkg00-1.0.0", first)
    time.sleep(1.1)  # gzip headers hold a time in seconds: a second later it would differ
    write_tar_gz(files, "pkg00-1.0.0", second)
    assert first.getvalue() == second.getvalue()


async def test_files_dated_outside_what_zip_can_hold_still_download(tmp_path, serve, http):
    version = pf.write_dir(tmp_path / "packages", "dated", VERSION)
    os.utime(version / "docs" / "README.md", (7_258_118_400, 7_258_118_400))  # year 2200
    os.utime(version / "changelog.yml", (0, 0))  # 1970, before zip's 1980
    expected = pf.package_files("dated", VERSION)
    _, base = await serve(registry=registry_for(tmp_path / "packages", ArchiveStore(str(tmp_path / "arc"))))
    for fmt in (ZIP, TAR_GZ):
        async with http.get(f"{base}/epr/dated/dated-{VERSION}.{fmt}") as response:
            assert response.status == 200, fmt
            assert archive_files(fmt, await response.read(), f"dated-{VERSION}") == expected


async def test_downloads_of_a_folder_whose_files_come_and_go_while_it_is_archived(tmp_path, serve, http):
    version = pf.write_dir(tmp_path / "packages", "churn", VERSION)
    stable = pf.package_files("churn", VERSION)
    churned = b"churn\n" * 2000
    store = ArchiveStore(str(tmp_path / "arc"), max_bytes=1)
    store.recent_s = 0.0
    _, base = await serve(registry=registry_for(tmp_path / "packages", store))
    stop = threading.Event()

    def churn() -> None:  # files appear (whole, by rename) and vanish, as a sync tool would do
        staging = tmp_path / "staging"
        staging.write_bytes(churned)
        i = 0
        while not stop.is_set():
            target = version / "docs" / f"churn-{i % 7}.md"
            if target.exists():
                target.unlink()
            else:
                shutil.copyfile(staging, tmp_path / "next")
                os.replace(tmp_path / "next", target)
            i += 1
            stop.wait(0.0005)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for _ in range(15):
            for fmt in (ZIP, TAR_GZ):
                async with http.get(f"{base}/epr/churn/churn-{VERSION}.{fmt}") as response:
                    assert response.status == 200, fmt
                    files = archive_files(fmt, await response.read(), f"churn-{VERSION}")
                assert {k: files[k] for k in stable} == stable
                assert all(files[k] == churned for k in files.keys() - stable.keys())
    finally:
        stop.set()
        thread.join(10)
