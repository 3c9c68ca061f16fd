"""``eprd mirror`` against a faulty upstream of the test's own: cut and lying bodies, corrupted
zips, missing signatures, resumed and restarted downloads, and atomic placement under a watcher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import pkgfactory as pf
from tests.conftest import ROOT, EprdProcess, child_env, write_config
from tests.mirrorkit import FaultyUpstream, Signer, run_mirror, visible


def package_zip(name: str, version: str, blob: int = 256 * 1024) -> bytes:
    """A valid package zip with an incompressible blob, so that halves and offsets mean something."""
    return pf.zip_bytes(pf.zip_entries(name, version, files={"docs/blob.bin": os.urandom(blob)}))


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyUpstream]:
    upstream = FaultyUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


@pytest.mark.parametrize(
    ("fault", "reason", "partial_kept"),
    [
        ("truncate", "truncated body: ", True),  # connection cut half-way, every time
        ("long-length", "truncated body: ", True),  # Content-Length announces more than comes
        ("short-length", "corrupted zip", False),  # Content-Length announces less: a cut archive
        ("corrupt", "corrupted zip", False),  # whole length, damaged bytes
    ],
)
async def test_bad_bodies_are_refused_and_nothing_is_placed(
    faulty: FaultyUpstream, tmp_path: Path, fault: str, reason: str, partial_kept: bool
) -> None:
    faulty.add("bad", "1.0.0", package_zip("bad", "1.0.0"), fault=fault)
    faulty.add("good", "1.0.0", package_zip("good", "1.0.0"))
    dest = tmp_path / "mirror"
    run = await run_mirror("-from", faulty.base, "-to", dest)
    assert run.rc == 1
    refused = next(line for line in run.out.splitlines() if line.startswith("refused bad-1.0.0: "))
    assert refused.startswith(f"refused bad-1.0.0: {reason}"), refused
    assert "eprd mirror: refused bad-1.0.0" in run.err
    assert visible(dest) == ["good-1.0.0.zip"]  # the other version is not held back
    assert ((dest / ".bad-1.0.0.zip.partial").exists()) is partial_kept  # kept only to resume
    assert run.summary().startswith("mirror: 1 added, 0 kept, 1 refused")


async def test_a_body_that_is_no_zip_is_refused(faulty: FaultyUpstream, tmp_path: Path) -> None:
    faulty.add("html", "1.0.0", b"<html>captive portal</html>" * 100)
    dest = tmp_path / "mirror"
    run = await run_mirror("-from", faulty.base, "-to", dest)
    assert run.rc == 1
    assert "refused html-1.0.0: corrupted zip: File is not a zip file" in run.out
    assert os.listdir(dest) == []


@pytest.mark.parametrize(
    ("sig_fault", "reason"),
    [("missing", "missing signature: "), ("error", "download failed: "), ("truncate", "truncated signature")],
)
async def test_signature_faults_are_refused(
    faulty: FaultyUpstream, tmp_path: Path, signer: Signer, sig_fault: str, reason: str
) -> None:
    data = package_zip("sig", "1.0.0")
    faulty.add("sig", "1.0.0", data, signer.sign(data) * 20, sig_fault=sig_fault)
    key = signer.write_key(tmp_path / "key.asc")
    dest = tmp_path / "mirror"
    run = await run_mirror("-from", faulty.base, "-to", dest, "-verify-key", key, "-attempts", "2")
    assert run.rc == 1
    assert f"refused sig-1.0.0: {reason}" in run.out, run.out
    assert visible(dest) == []
    assert faulty.requested(".zip") == []  # no zip is fetched for a version refused by its signature


async def test_signed_zips_from_the_faulty_upstream_verify(
    faulty: FaultyUpstream, tmp_path: Path, signer: Signer
) -> None:
    data = package_zip("sig", "1.0.0")
    faulty.add("sig", "1.0.0", data, signer.sign(data))
    other = package_zip("trickled", "1.0.0", blob=1024)
    faulty.add("trickled", "1.0.0", other, signer.sign(other), fault="trickle", sig_fault="trickle")
    dest = tmp_path / "mirror"
    run = await run_mirror("-from", faulty.base, "-to", dest, "-verify-key", signer.write_key(tmp_path / "k"))
    assert run.rc == 0, run.out + run.err
    assert visible(dest) == [
        "sig-1.0.0.zip",
        "sig-1.0.0.zip.sig",
        "trickled-1.0.0.zip",
        "trickled-1.0.0.zip.sig",
    ]


async def test_a_cut_download_resumes_with_range(faulty: FaultyUpstream, tmp_path: Path) -> None:
    data = package_zip("cut", "1.0.0")
    faulty.add("cut", "1.0.0", data, fault="cut-once")
    dest = tmp_path / "mirror"
    run = await run_mirror("-from", faulty.base, "-to", dest)
    assert run.rc == 0, run.out + run.err
    assert (dest / "cut-1.0.0.zip").read_bytes() == data
    (_first, no_range), (_second, resume) = faulty.requested(".zip")
    assert no_range is None and resume is not None
    offset = int(resume.removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= len(data) // 2
    assert run.summary().startswith(f"mirror: 1 added, 0 kept, 0 refused, 0 pruned, {len(data)} bytes")


async def test_an_interrupted_run_is_resumed_by_the_next(faulty: FaultyUpstream, tmp_path: Path) -> None:
    data = package_zip("big", "1.0.0")
    faulty.add("big", "1.0.0", data)
    dest = tmp_path / "mirror"
    dest.mkdir()
    third = len(data) // 3
    (dest / ".big-1.0.0.zip.partial").write_bytes(data[:third])  # what a killed run leaves
    run = await run_mirror("-from", faulty.base, "-to", dest)
    assert run.rc == 0, run.out + run.err
    assert faulty.requested(".zip") == [("/epr/big/big-1.0.0.zip", f"bytes={third}-")]
    assert (dest / "big-1.0.0.zip").read_bytes() == data
    assert f"{len(data) - third} bytes downloaded" in run.summary()
    assert sorted(os.listdir(dest)) == ["big-1.0.0.zip"]


async def test_a_server_without_range_restarts_the_file(faulty: FaultyUpstream, tmp_path: Path) -> None:
    data = package_zip("whole", "1.0.0")
    faulty.add("whole", "1.0.0", data, fault="no-range")
    dest = tmp_path / "mirror"
    dest.mkdir()
    (dest / ".whole-1.0.0.zip.partial").write_bytes(data[:1000])
    run = await run_mirror("-from", faulty.base, "-to", dest)
    assert run.rc == 0, run.out + run.err
    assert (dest / "whole-1.0.0.zip").read_bytes() == data  # 200: written from the start, not appended
    assert len(faulty.requested(".zip")) == 1


async def test_a_stale_piece_of_another_build_is_started_over(faulty: FaultyUpstream, tmp_path: Path) -> None:
    data = package_zip("stale", "1.0.0")
    faulty.add("stale", "1.0.0", data)
    dest = tmp_path / "mirror"
    dest.mkdir()
    (dest / ".stale-1.0.0.zip.partial").write_bytes(b"x" * 5000)  # not the start of this file
    run = await run_mirror("-from", faulty.base, "-to", dest)
    assert run.rc == 0, run.out + run.err
    assert (dest / "stale-1.0.0.zip").read_bytes() == data
    assert faulty.requested(".zip") == [
        ("/epr/stale/stale-1.0.0.zip", "bytes=5000-"),
        ("/epr/stale/stale-1.0.0.zip", None),
    ]


async def test_incremental_rerun_asks_only_for_the_search(faulty: FaultyUpstream, tmp_path: Path) -> None:
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        faulty.add("inc", version, package_zip("inc", version, blob=1024))
    dest = tmp_path / "mirror"
    assert (await run_mirror("-from", faulty.base, "-to", dest, "-parallel", "2")).rc == 0
    faulty.requests.clear()
    run = await run_mirror("-from", faulty.base, "-to", dest)
    assert run.rc == 0
    assert [path for path, _ in faulty.requests] == ["/search"]
    assert run.summary().startswith("mirror: 0 added, 3 kept, 0 refused, 0 pruned, 0 bytes downloaded")


class DirectoryPoller(threading.Thread):
    """Lists DIR as fast as it can; records every visible zip's size and sig-before-zip order."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.sizes: dict[str, set[int]] = {}
        self.zip_without_sig: list[str] = []
        self.listings = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                names = set(os.listdir(self.folder))
            except FileNotFoundError:
                continue
            self.listings += 1
            for name in names:
                if name.endswith(".zip") and not name.startswith("."):
                    if f"{name}.sig" not in names:
                        self.zip_without_sig.append(name)
                    with contextlib.suppress(FileNotFoundError):
                        self.sizes.setdefault(name, set()).add(os.stat(self.folder / name).st_size)
            time.sleep(0.0005)


async def test_a_watcher_on_dir_never_sees_a_partial_file(
    faulty: FaultyUpstream, tmp_path: Path, signer: Signer
) -> None:
    faulty.chunk_delay = 0.005
    sizes = {}
    for name in ("slow", "slower"):
        data = package_zip(name, "1.0.0", blob=200 * 1024)
        faulty.add(name, "1.0.0", data, signer.sign(data), fault="slow")
        sizes[f"{name}-1.0.0.zip"] = len(data)
    dest = tmp_path / "mirror"
    dest.mkdir()
    # a live-reloading eprd serving DIR, signatures required (its default)
    config = write_config(tmp_path / "served.yml", [dest])
    served = EprdProcess(
        ["-config", str(config)], child_env({"EPR_CACHE_DIR": str(tmp_path / "cache")}), tmp_path
    )
    poller = DirectoryPoller(dest)
    try:
        served.wait_healthy()
        poller.start()
        run = await run_mirror(
            "-from", faulty.base, "-to", dest, "-verify-key", signer.write_key(tmp_path / "k")
        )
        assert run.rc == 0, run.out + run.err
        deadline = time.monotonic() + 30
        found: list = []
        while time.monotonic() < deadline and len(found) < 2:
            with urllib.request.urlopen(f"{served.base}/search", timeout=5) as resp:
                found = json.loads(resp.read())
            await asyncio.sleep(0.1)
        assert sorted(entry["name"] for entry in found) == ["slow", "slower"]
    finally:
        poller.stop.set()
        poller.join(5)
        _, _, log = served.stop()
    assert poller.listings > 10
    assert poller.sizes == {name: {size} for name, size in sizes.items()}  # only ever seen whole
    assert poller.zip_without_sig == []  # the signature is always in place first
    assert "invalid package version" not in log and "invalid zip" not in log


async def test_a_killed_run_is_resumed_where_it_stopped(faulty: FaultyUpstream, tmp_path: Path) -> None:
    faulty.chunk_delay = 0.01
    data = package_zip("killed", "1.0.0", blob=400 * 1024)
    faulty.add("killed", "1.0.0", data, fault="slow")
    dest = tmp_path / "mirror"
    partial = dest / ".killed-1.0.0.zip.partial"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eprd", "mirror", "-from", faulty.base, "-to", str(dest),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (partial.exists() and partial.stat().st_size > 64 * 1024):
        await asyncio.sleep(0.02)
    proc.kill()  # no clean-up code runs: what a power cut or an OOM kill leaves
    await proc.wait()
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert visible(dest) == []
    faulty.requests.clear()
    faulty.chunk_delay = 0.0
    run = await run_mirror("-from", faulty.base, "-to", dest)
    assert run.rc == 0, run.out + run.err
    assert faulty.requested(".zip") == [("/epr/killed/killed-1.0.0.zip", f"bytes={kept}-")]
    assert (dest / "killed-1.0.0.zip").read_bytes() == data
