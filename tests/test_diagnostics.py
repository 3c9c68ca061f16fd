"""``-httpprof`` diagnostics, through the real ``eprd`` process and its own listener."""

from __future__ import annotations

import asyncio
import re
import socket
import tracemalloc
from pathlib import Path

import aiohttp
import pkgfactory as pf
import pytest
from conftest import write_config

from eprd.ops.diagnostics import Diagnostics

COLLAPSED = re.compile(r"^(thread [^;]+(?:;[^;]+)*) (\d+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def profiled(eprd_process, tmp_path: Path):
    """eprd with -httpprof over a folder holding a good and an invalid package version."""
    root = tmp_path / "packages"
    pf.write_dir(root, "good", "1.0.0")
    bad = pf.write_dir(root, "bad", "1.0.0", manifest={"release": "alpha"})
    config = write_config(tmp_path / "config.yml", [root])
    port = free_port()
    # (-log-level warn: no access lines, which would fill the stderr pipe under the profile's load)
    args = ["-config", str(config), "-require-package-signatures=false", "-log-level", "warn"]
    process = eprd_process([*args, "-httpprof", f"127.0.0.1:{port}"])
    process.wait_healthy()
    process.pprof = f"http://127.0.0.1:{port}/debug/pprof/"
    process.bad = bad
    async with aiohttp.ClientSession() as http:
        await wait_watching(http, process.pprof)
        yield process, http
    code, _, err = process.stop()
    assert code == 0, err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def wait_watching(http: aiohttp.ClientSession, pprof: str) -> None:
    """Ready means serving; the watcher starts just after, once the index cache is written."""
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        async with http.get(pprof + "snapshot") as response:
            if (await response.json())["watcher"]["running"]:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the watcher did not start within 15 s")


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with http.get(url, allow_redirects=False) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_index_lists_every_endpoint_and_unknown_paths_are_404(profiled):
    process, http = profiled
    status, ctype, body = await get(http, process.pprof)
    assert (status, ctype.split(";")[0]) == (200, "text/html")
    for link in ("tasks", "profile?seconds=30", "heap", "snapshot", "cmdline"):
        assert f'href="{link}"' in body
    assert "collapsed stacks" in body  # the profile's format is named
    async with http.get(process.pprof.rstrip("/"), allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (301, "/debug/pprof/")
    for path in ("/", "/metrics", "/debug/pprof/nope", "/debug/pprofx"):
        status, _, body = await get(http, process.pprof.split("/debug")[0] + path)
        assert (status, body) == (404, "404 page not found\n"), path
    status, _, body = await get(http, process.pprof + "cmdline")
    assert status == 200 and "-httpprof" in body.split("\x00")


async def test_tasks_show_asyncio_tasks_and_threads(profiled):
    process, http = profiled
    status, ctype, body = await get(http, process.pprof + "tasks")
    assert (status, ctype.split(";")[0]) == (200, "text/plain")
    assert re.search(r"^eprd \S+ \(API \S+\), pid \d+: \d+ asyncio tasks, \d+ threads$", body, re.M)
    watcher = body.split("--- task 'eprd-watcher'")[1].split("\n--- ")[0]
    assert 'eprd/indexers/local/watcher.py", line' in watcher and "in run" in watcher  # its await chain
    assert "[running (this request)]" in body
    assert "--- thread 'MainThread'" in body
    main = body.split("--- thread 'MainThread'")[1].split("\n--- ")[0]
    assert "run_forever" in main
    assert (await get(http, process.pprof + "goroutine"))[0] == 200


async def test_profile_samples_the_running_server(profiled):
    process, http = profiled

    async def load() -> int:
        done = 0
        while True:
            for query in ("", "?package=good", "?all=true", "?category=custom"):
                async with http.get(process.base + "/search" + query) as response:
                    await response.read()
                done += 1
            await asyncio.sleep(0)

    traffic = asyncio.create_task(load())
    try:
        async with http.get(process.pprof + "profile?seconds=1&hz=200") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            samples = int(response.headers["X-Eprd-Samples"])
            body = await response.text()
    finally:
        traffic.cancel()
    assert samples > 0
    lines = body.splitlines()
    assert lines
    stacks = {}
    for line in lines:
        match = COLLAPSED.match(line)
        assert match, line
        stacks[match.group(1)] = int(match.group(2))
    assert sum(stacks.values()) > 0
    # The event loop thread was caught serving requests: eprd's frames under asyncio's.
    serving = [s for s in stacks if s.startswith("thread MainThread;") and "(eprd/" in s]
    assert serving, list(stacks)[:10]
    # With idle=true, the waiting threads show up too (the selector, the pool's workers).
    async with http.get(process.pprof + "profile?seconds=0.2&idle=true") as response:
        idle = await response.text()
    assert "select (selectors.py:" in idle
    for query in ("seconds=0", "seconds=-1", "seconds=x", "seconds=3601", "hz=0", "hz=2000"):
        status, _, _ = await get(http, process.pprof + "profile?" + query)
        assert status == 400, query


async def test_heap_reports_tracemalloc_allocations(profiled):
    process, http = profiled
    status, _, body = await get(http, process.pprof + "heap?limit=20")
    assert status == 200
    header, summary, *rows = body.splitlines()
    assert re.match(
        r"# tracemalloc: \d+ bytes traced now, \d+ at peak, \d+ frame\(s\) per allocation", header
    )
    assert re.match(r"# top 20 of \d+ allocation sites by lineno", summary)
    sites = [r for r in rows if not r.startswith("    ")]
    assert len(sites) == 20
    assert all(re.match(r"\d+ B in \d+ blocks: .+:\d+$", r) for r in sites)
    # Traced since before the packages were loaded: eprd's own allocations are there.
    status, _, everything = await get(http, process.pprof + "heap?limit=100000&key=filename")
    assert status == 200 and "/eprd/" in everything
    status, _, body = await get(http, process.pprof + "heap?limit=3&key=traceback")
    assert status == 200 and body.count(" blocks: ") == 3
    for query in ("key=nope", "limit=0", "limit=x"):
        assert (await get(http, process.pprof + "heap?" + query))[0] == 400, query


async def test_snapshot_describes_what_is_served(profiled):
    process, http = profiled
    async with http.get(process.pprof + "snapshot") as response:
        assert response.status == 200
        doc = await response.json()
    assert doc["generation"] == 1
    assert doc["package_versions"] == 1 and doc["package_names"] == 1
    assert doc["indexers"] == {"ZipFileSystemIndexer": 0, "FileSystemIndexer": 1}
    assert doc["rejected"] == [{"location": str(process.bad), "reason": 'invalid release: "alpha"'}]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", doc["built_at"])
    assert doc["age_seconds"] >= 0
    assert (doc["ready"], doc["shutting_down"]) == (True, False)
    assert doc["watcher"]["running"] is True and doc["watcher"]["rebuilds"] == 0
    assert isinstance(doc["response_cache_entries"], int)


def test_tracemalloc_runs_only_for_diagnostics():
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:
        tracemalloc.stop()
    try:
        diagnostics = Diagnostics(["eprd"])
        assert not tracemalloc.is_tracing()  # creating it starts nothing
        diagnostics.trace_memory()
        assert tracemalloc.is_tracing()
        diagnostics.close()
        assert not tracemalloc.is_tracing()
        tracemalloc.start()  # tracing someone else started is left alone
        other = Diagnostics(["eprd"])
        other.trace_memory()
        other.close()
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
        if was_tracing:
            tracemalloc.start()
