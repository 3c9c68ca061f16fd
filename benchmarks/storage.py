#!/usr/bin/env python3
"""Benchmark of the storage indexer (issue 14).

    .venv/bin/python benchmarks/storage.py [--versions 10000] [--replicas 3] [--seconds 10] [OUT_DIR]

1. builds a ``file://`` bucket whose index holds ``--versions`` package versions: the
   test packages are published with ``eprd publish``'s code, then their documents are
   cloned under new names (``<name>_<n>``) until the index has that many entries;
2. start-up: the time from starting ``eprd -feature-storage-indexer`` on that bucket to
   ``/health?ready=true`` answering 200 (target: <= 2 s; no YAML is read: only JSON), and
   the process's RSS once ready, with ``-feature-storage-indexer`` and with
   ``-feature-sql-storage-indexer``;
3. publish to replicas: ``--replicas`` eprd processes poll the bucket every 1 s
   (``-feature-incremental-updates``); a new version is published (index, delta, cursor
   last) and the time until every replica serves it is measured;
4. ``/search`` throughput (requests/s, ``--seconds`` each, 32 connections) of the test
   packages served from folders and from a bucket holding the same packages.

Prints a JSON report; the README's "Package Storage" section quotes one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eprd.cli.publish import compact_document, publish  # noqa: E402
from eprd.indexers.local.indexer import load_snapshot  # noqa: E402
from eprd.indexers.storage import layout  # noqa: E402
from eprd.indexers.storage.objectstore import open_store  # noqa: E402
from eprd.model.package import LoadOptions  # noqa: E402

TESTDATA = [ROOT / "testdata" / "packages", ROOT / "testdata" / "zips"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_eprd(out: Path, args: list[str], name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    folder = out / name
    folder.mkdir(exist_ok=True)
    config = folder / "config.yml"
    if not config.exists():
        config.write_text("package_paths: []\n")
    command = [sys.executable, "-m", "eprd", "-address", f"127.0.0.1:{port}", "-config", str(config)]
    proc = subprocess.Popen(
        [*command, "-log-level", "error", "-cache-dir", str(folder / "cache"), *args],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait(check, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.005)
    raise RuntimeError("timed out")


def ready(base: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"eprd exited with {proc.returncode}")
    return status(base + "/health?ready=true") == 200


def storage_args(bucket: str, *extra: str) -> list[str]:
    return [
        "-storage-indexer-bucket-internal",
        bucket,
        "-storage-endpoint",
        bucket + "/",
        "-require-package-signatures=false",
        *extra,
    ]


async def build_bucket(bucket: str, versions: int) -> int:
    """Publish the test packages, then clone their documents into one index of ``versions`` entries."""
    snapshot = load_snapshot([str(p) for p in TESTDATA], LoadOptions())
    packages = [item.package for item in snapshot.packages.values()]
    await publish(packages, bucket, bucket, 16, "1000000000")
    documents = [orjson.loads(compact_document(p)) for p in packages]
    entries = []
    copy = 0
    while len(entries) < versions:
        for doc in documents:
            if len(entries) >= versions:
                break
            raw = orjson.dumps(doc).decode()
            name = doc["name"]
            clone = f"{name}_{copy}" if copy else name
            if copy:
                raw = raw.replace(f"/{name}/", f"/{clone}/").replace(f"/{name}-", f"/{clone}-")
                raw = raw.replace(f'"name":"{name}"', f'"name":"{clone}"', 1)
            entries.append(raw.encode())
        copy += 1
    store = open_store(bucket)
    await store.put(layout.index_key("1000000001", layout.INDEX_ALL), layout.index_document(entries), "")
    await store.put(layout.CURSOR, layout.cursor_document("1000000001"), "")
    await store.close()
    return len(entries)


def startup(out: Path, bucket: str, flag: str, runs: int = 3) -> dict[str, float]:
    times, rss = [], []
    for run in range(runs):
        proc, base = start_eprd(out, [flag, *storage_args(bucket)], f"start-{flag}-{run}")
        try:
            times.append(wait(lambda b=base, p=proc: ready(b, p)))
            rss.append(rss_mib(proc.pid))
            # Our process, with the whole index (another process could hold a reused port).
            assert status(base + "/package/acme_logs_1/1.10.0/") == 200
        finally:
            proc.terminate()
            proc.wait()
    return {
        "ready_seconds_best": round(min(times), 3),
        "ready_seconds_median": round(sorted(times)[1], 3),
        "rss_mib": round(max(rss), 1),
    }


def publish_to_replicas(out: Path, bucket: str, replicas: int) -> dict[str, float]:
    procs = [
        start_eprd(
            out,
            [
                "-feature-storage-indexer",
                "-feature-incremental-updates",
                "-storage-indexer-watch-interval",
                "1s",
                *storage_args(bucket),
            ],
            f"replica-{i}",
        )
        for i in range(replicas)
    ]
    try:
        for proc, base in procs:
            wait(lambda b=base, p=proc: ready(b, p))
        store = open_store(bucket)
        doc = orjson.loads(asyncio.run(store.get(layout.index_key("1000000001", layout.INDEX_ALL))))[
            "packages"
        ][0]["package_manifest"]
        raw = orjson.dumps(doc).decode()
        old = doc["version"]
        raw = raw.replace(f'"version":"{old}"', '"version":"99.0.0"', 1).replace(f"-{old}", "-99.0.0")
        raw = raw.replace(f"/{old}", "/99.0.0")
        name = doc["name"]

        async def write() -> None:
            # As eprd publish does: the full index and the delta, then the cursor.
            full = await store.get(layout.index_key("1000000001", layout.INDEX_ALL))
            full = full[: -len(b"]}")] + b',{"package_manifest":' + raw.encode() + b"}]}"
            await store.put(layout.index_key("1000000002", layout.INDEX_ALL), full, "")
            delta = layout.delta_document([raw.encode()], [], [])
            await store.put(layout.index_key("1000000002", layout.INDEX_DELTA), delta, "")
            await store.put(layout.CURSOR, layout.cursor_document("1000000002"), "")
            await store.close()

        started = time.monotonic()
        asyncio.run(write())
        for _, base in procs:
            wait(lambda b=base: status(f"{b}/package/{name}/99.0.0/") == 200)
        return {
            "replicas": replicas,
            "seconds_to_all_serving": round(time.monotonic() - started, 3),
            "poll_interval_seconds": 1.0,
        }
    finally:
        for proc, _ in procs:
            proc.terminate()
            proc.wait()


async def load(base: str, path: str, seconds: float, connections: int = 32) -> dict[str, float]:
    done = errors = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                async with session.get(base + path) as response:
                    await response.read()
                    done += 1
                    errors += response.status != 200

        await asyncio.gather(*(worker() for _ in range(connections)))
    return {"requests_per_second": round(done / seconds, 1), "errors": errors}


def throughput(out: Path, seconds: float) -> dict[str, dict[str, float]]:
    folder = out / "small-bucket"
    folder.mkdir(exist_ok=True)
    bucket = folder.as_uri()
    snapshot = load_snapshot([str(p) for p in TESTDATA], LoadOptions())
    asyncio.run(publish([i.package for i in snapshot.packages.values()], bucket, bucket))
    local_folder = out / "local"
    local_folder.mkdir(exist_ok=True)
    (local_folder / "config.yml").write_text("package_paths:\n" + "".join(f"  - {p}\n" for p in TESTDATA))
    results = {}
    for name, args in (
        ("folders", ["-require-package-signatures=false"]),
        ("storage", ["-feature-storage-indexer", *storage_args(bucket)]),
    ):
        proc, base = start_eprd(out, args, "local" if name == "folders" else "storage-throughput")
        try:
            wait(lambda b=base, p=proc: ready(b, p))
            results[name] = {
                "/search": asyncio.run(load(base, "/search", seconds)),
                "/search?all=true": asyncio.run(load(base, "/search?all=true", seconds)),
            }
        finally:
            proc.terminate()
            proc.wait()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="")
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    opts = parser.parse_args()
    out = Path(opts.out or tempfile.mkdtemp(prefix="eprd-storage-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    bucket_folder = out / "bucket"
    shutil.rmtree(bucket_folder, ignore_errors=True)
    bucket_folder.mkdir()
    bucket = bucket_folder.as_uri()
    report: dict[str, object] = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]}
    report["index_versions"] = asyncio.run(build_bucket(bucket, opts.versions))
    report["index_bytes"] = os.path.getsize(bucket_folder / layout.index_key("1000000001", layout.INDEX_ALL))
    report["startup"] = {
        "StorageIndexer": startup(out, bucket, "-feature-storage-indexer"),
        "SQLStorageIndexer": startup(out, bucket, "-feature-sql-storage-indexer"),
    }
    report["publish_to_replicas"] = publish_to_replicas(out, bucket, opts.replicas)
    report["search_throughput"] = throughput(out, opts.seconds)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
