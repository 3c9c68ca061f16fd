"""Issue 10, loading side: no package version can take the registry down.

Every bad version of :mod:`badpackages` (each one once stopped eprd from starting or killed
live reload) is rejected with its path and a reason, in process, in loader worker processes,
at the start-up of a real ``eprd`` process and through its live reload; the limits of
:mod:`eprd.model.limits` hold; background tasks are supervised (logged, counted, restarted).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import badpackages as bp
import orjson
import pkgfactory as pf
import pytest
from conftest import free_port, write_config

from eprd.indexers.local import indexcache
from eprd.indexers.local.collection import Collection, Loading, load_many
from eprd.model import limits, package, yamlfile, zipcheck
from eprd.model.files import PackageFileError, ZipFiles
from eprd.model.package import LoadOptions, Package, PackageError, load_package
from eprd.ops.supervise import RESTARTING, STOPPED, Supervisor

OPTIONS = LoadOptions()


def load(location: Path) -> Package | PackageError:
    return load_package(str(location), OPTIONS)[0]


def assert_rejected(result: Package | PackageError, location: Path, words: str) -> None:
    assert isinstance(result, PackageError), f"{location} was accepted"
    assert words in result.reason, result.reason
    # Path and reason are text every log line and JSON document can carry.
    orjson.dumps({"location": result.location, "reason": result.reason})
    assert result.location == package.printable(str(location))


# --- every case, in process --------------------------------------------------------------------


@pytest.mark.parametrize("case", bp.CASES, ids=[c.id for c in bp.CASES])
def test_each_bad_version_is_rejected_with_a_reason(case: bp.Case, tmp_path: Path) -> None:
    location = case.write(tmp_path)
    assert_rejected(load(location), location, case.words)


def test_the_good_package_beside_them_loads(tmp_path: Path) -> None:
    assert isinstance(load(pf.write_dir(tmp_path, "good", "1.0.0")), Package)
    assert isinstance(load(pf.write_zip(tmp_path, "good", "1.0.0")), Package)


def test_a_zip_load_keeps_none_of_what_its_check_decompressed(tmp_path: Path) -> None:
    """The check hands the loader the YAML and JSON it decompressed; what the loader did not read
    is dropped with the load, so that the package (kept while served, pickled to the serving
    process and into the index cache) carries no entry's content."""
    unread = b"an unread kibana object " * 40
    location = pf.write_zip(
        tmp_path, "demo", "1.0.0", files={"kibana/dashboard/demo-a.json": b'{"title": "%s"}' % unread}
    )
    result = load(location)
    assert isinstance(result, Package)
    assert unread not in pickle.dumps(result)


def test_the_zip_check_keeps_no_more_than_its_budget(tmp_path: Path) -> None:
    """What the check keeps for the loader is bounded, whatever the archive holds."""
    streams = {f"s{i}": {"title": f"Stream {i} " + "x" * 2000} for i in range(8)}
    location = pf.write_zip(tmp_path, "demo", "1.0.0", data_streams=streams)
    with zipfile.ZipFile(location) as archive:
        kept = zipcheck.check_zip(archive, keep=lambda info: True, keep_bytes=5000)
        everything = sum(info.file_size for info in archive.infolist())
    assert kept and sum(map(len, kept.values())) <= 5000 < everything


def test_a_zip_beyond_the_check_budget_loads_every_data_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries the check did not keep are read from the archive, as before."""
    streams = {f"s{i}": {"title": f"Stream {i}"} for i in range(6)}
    location = pf.write_zip(tmp_path, "demo", "1.0.0", data_streams=streams)
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 1500)  # the budget: a few files' worth
    result = load(location)
    assert isinstance(result, Package)
    document = orjson.loads(package.render_document(result, None))
    assert sorted(d["title"] for d in document["data_streams"]) == [f"Stream {i}" for i in range(6)]


def test_worker_processes_reject_them_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up in loader processes: as many candidates as it takes to use them."""
    bad = {str(case.write(tmp_path / "bad")): case for case in bp.CASES}
    good = [str(pf.write_dir(tmp_path / "good", f"good{i}", "1.0.0")) for i in range(70 - len(bad))]
    results = load_many(sorted(bad) + good, OPTIONS, workers=2)
    by_location = {location: result for location, result, _ in results}
    assert len(by_location) == len(bad) + len(good)
    for location, case in bad.items():
        assert_rejected(by_location[location], Path(location), case.words)
    assert all(isinstance(by_location[location], Package) for location in good)


def test_a_cold_start_returns_to_its_imports_once_the_loader_processes_have_work(tmp_path: Path) -> None:
    """``Loading.start`` hands the loaders their chunks before the caller imports the HTTP stack
    (which would hold the interpreter lock meanwhile), and does not wait for the load itself."""
    root = tmp_path / "packages"
    for i in range(70):
        pf.write_dir(root, f"pkg{i}", "1.0.0")
    collection = Collection([str(root)], OPTIONS, workers=2)
    seen: list[int] = []
    original = collection.load_all

    def load_all(pool: Any, dispatched: Any) -> Any:  # the real load, watched
        return original(pool, lambda: (seen.append(len(collection.packages)), dispatched()))

    collection.load_all = load_all  # type: ignore[method-assign]
    loading = Loading.start(collection)
    assert seen and seen[0] == 0  # handed out before any result was taken in
    loading.future.result(timeout=60)
    assert len(collection.packages) == 70


@pytest.mark.parametrize(
    "error",
    [
        RecursionError("deep"),
        MemoryError(),
        NotImplementedError("method"),
        RuntimeError("password required"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        zipfile.BadZipFile("Bad CRC-32"),
        KeyError("x"),
        AttributeError("y"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_exception_while_loading_rejects_the_version(
    error: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The boundary: whatever a future bug raises inside loading is a rejection, never a crash."""

    def fail(self: Any) -> Package:
        raise error

    monkeypatch.setattr(package._Loader, "load", fail)
    location = pf.write_dir(tmp_path, "demo")
    result = load(location)
    assert isinstance(result, PackageError)
    assert result.reason


# --- limits ------------------------------------------------------------------------------------


def test_yaml_alias_count_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    document = b"a: &a [1]\nb: [*a, *a, *a]\n"
    assert yamlfile.load(document) == {"a": [1], "b": [[1], [1], [1]]}
    monkeypatch.setattr(limits, "MAX_YAML_ALIASES", 2)
    with pytest.raises(yamlfile.YAMLError, match="more than 2 aliases"):
        yamlfile.load(document + b"c: 1\n")  # (other bytes: not the memoised document)


def test_yaml_expansion_limit_counts_what_aliases_expand_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_YAML_NODES", 50)
    with pytest.raises(yamlfile.YAMLError, match="expand to more than 50 nodes"):
        yamlfile.load(b"a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [*a, *a, *a, *a, *a, *a]\n")


@pytest.mark.parametrize("depth, accepted", [(100, True), (101, False)])
def test_yaml_depth_limit_on_both_parsers(depth: int, accepted: bool) -> None:
    block = bp.nested(depth - 2).encode()  # the fast reader's style (the top mapping and x's count)
    brackets = depth - 1
    flow = b"x: &y " + b"[" * brackets + b"]" * brackets + b"\n"  # PyYAML's (an anchor)
    for document in (block, flow):
        if accepted:
            yamlfile.load_config(document)
        else:
            with pytest.raises(yamlfile.YAMLError, match="nesting deeper than 100"):
                yamlfile.load_config(document)


def test_dotted_keys_count_towards_the_depth_limit() -> None:
    assert yamlfile.load_config(b"a.b.c: 1\n") == {"a": {"b": {"c": 1}}}
    with pytest.raises(yamlfile.YAMLError, match="dotted key"):
        yamlfile.load_config(bp.nested(60).replace("b: 1", ".".join(["k"] * 50) + ": 1").encode())


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_entries_limit(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {f"docs/extra{i}.md": "x\n" for i in range(20)}
    write = pf.write_dir if kind == "dir" else pf.write_zip
    location = write(tmp_path, "demo", files=extra)
    assert isinstance(load(location), Package)
    monkeypatch.setattr(limits, "MAX_ENTRIES", 20)
    assert_rejected(load(location), location, "more than 20")


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_file_size_limit(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write = pf.write_dir if kind == "dir" else pf.write_zip
    # A manifest of about 200 KiB: over several reads of the folder reader.
    long = pf.default_manifest("demo", "1.0.0")
    long["description"] = "d" * (200 << 10)
    location = write(tmp_path, "demo", manifest=long)
    assert isinstance(load(location), Package)
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 100 << 10)
    assert_rejected(load(location), location, "manifest.yml is larger than 102400 bytes")


def test_zip_total_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location = pf.write_zip(tmp_path, "demo", files={"docs/big.txt": os.urandom(64 << 10)})
    assert isinstance(load(location), Package)
    monkeypatch.setattr(limits, "MAX_ZIP_BYTES", 32 << 10)
    assert_rejected(load(location), location, "more than 32768 bytes decompressed")


def test_a_highly_compressible_but_small_file_is_fine(tmp_path: Path) -> None:
    location = pf.write_zip(tmp_path, "demo", files={"docs/zeros.txt": bytes(limits.RATIO_MIN_BYTES)})
    assert isinstance(load(location), Package)


def test_folder_depth_limit_is_the_limit(tmp_path: Path) -> None:
    location = pf.write_dir(tmp_path, "demo")
    deep = location / "docs" / "/".join(["d"] * (limits.MAX_FOLDER_DEPTH - 2))
    deep.mkdir(parents=True)
    (deep / "x.md").write_text("x\n")
    assert isinstance(load(location), Package)


# --- reads after loading --------------------------------------------------------------------------


def test_a_zip_replaced_by_a_damaged_one_raises_package_file_error(tmp_path: Path) -> None:
    """What the HTTP layer answers 4xx: the archive changed under a loaded package."""
    location = pf.write_zip(tmp_path, "demo")
    loaded = load(location)
    assert isinstance(loaded, Package) and isinstance(loaded.files, ZipFiles)
    assert loaded.files.read("docs/README.md").startswith(b"# demo")
    name = "demo-1.0.0/docs/README.md"
    data = bp.zip_with(pf.zip_entries("demo", "1.0.0"), stored=frozenset({name}))
    data[bp.entry_data(data, name)] ^= 0x01
    location.write_bytes(bytes(data))
    os.utime(location, ns=(time.time_ns() + 10**9,) * 2)  # (a new stamp, whatever the clock's grain)
    with pytest.raises(PackageFileError, match="CRC"):
        loaded.files.read("docs/README.md")
    with pytest.raises(FileNotFoundError):
        loaded.files.read("docs/nope.md")


async def test_a_file_of_a_replaced_damaged_zip_is_a_404_not_a_500(serve: Any, tmp_path: Path) -> None:
    root = tmp_path / "zips"
    location = pf.write_zip(root, "demo")
    _, base = await serve([root])
    url = f"{base}/package/demo/1.0.0/docs/README.md"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200
        name = "demo-1.0.0/docs/README.md"
        data = bp.zip_with(pf.zip_entries("demo", "1.0.0"), stored=frozenset({name}))
        data[bp.entry_data(data, name)] ^= 0x01
        location.write_bytes(bytes(data))
        os.utime(location, ns=(time.time_ns() + 10**9,) * 2)
        async with http.get(url) as response:
            assert response.status == 404


def test_a_zip_checked_once_is_not_read_again_from_the_index_cache(tmp_path: Path) -> None:
    """Warm starts stay cheap: the cached package's zip is not decompressed again."""
    root = tmp_path / "zips"
    pf.write_zip(root, "demo")
    time.sleep(2 * indexcache.CLOCK_SLACK_NS / 1e9)  # (what was just written is not cached)
    cache = tmp_path / "cache"
    first = Collection([str(root)], OPTIONS, cache_folder=str(cache))
    first.load_all()
    first.save_cache()
    checked: list[str] = []
    original = zipcheck.check_zip
    zipcheck.check_zip = lambda archive, **kw: checked.append(archive.filename) or original(archive, **kw)
    try:
        second = Collection([str(root)], OPTIONS, cache_folder=str(cache))
        second.load_all()
    finally:
        zipcheck.check_zip = original
    assert second.reused == 1 and checked == []


# --- the supervisor --------------------------------------------------------------------------------


async def test_a_failing_task_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(initial=0.01, ceiling=0.02)
    restarted: list[str] = []
    supervisor.on_restart.append(restarted.append)
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError(f"failure {runs}")
        done.set()

    with caplog.at_level("ERROR", logger="eprd.supervisor"):
        task = supervisor.start("flaky", flaky)
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.wait_for(task, 30)
    state = supervisor.states()["flaky"]
    assert (state["state"], state["restarts"], state["last_error"]) == (STOPPED, 3, "RuntimeError: failure 3")
    assert restarted == ["flaky"] * 3
    failures = [r for r in caplog.records if r.name == "eprd.supervisor"]
    assert len(failures) == 3 and all(r.exc_info for r in failures)


async def test_stop_ends_a_task_waiting_out_its_backoff() -> None:
    supervisor = Supervisor(initial=3600, ceiling=3600)

    async def broken() -> None:
        raise ValueError("always")

    supervisor.start("broken", broken)
    deadline = time.monotonic() + 30
    while supervisor.states()["broken"]["state"] != RESTARTING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.wait_for(supervisor.stop(timeout=30), 30)
    assert supervisor.states()["broken"]["state"] == STOPPED


# --- through a real eprd process ---------------------------------------------------------------------


async def poll(check: Any, what: str, timeout: float = 60) -> Any:
    """``await check()`` until it returns something true (within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s (last: {last!r})")


async def fetch_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, url
        return await response.json()


async def served(http: aiohttp.ClientSession, base: str) -> set[tuple[str, str]]:
    entries = await fetch_json(http, f"{base}/search?all=true&prerelease=true")
    return {(e["name"], e["version"]) for e in entries}


def start(eprd_process: Any, tmp_path: Path, root: Path, *extra: str) -> Any:
    config = write_config(tmp_path / "config.yml", [root])
    port = free_port()
    process = eprd_process(
        [
            "-config",
            str(config),
            "-require-package-signatures=false",
            "-log-level",
            "warn",
            "-httpprof",
            f"127.0.0.1:{port}",
            *extra,
        ]
    )
    process.pprof = f"http://127.0.0.1:{port}/debug/pprof/"
    process.wait_healthy(timeout=90)
    return process


def rejected_reasons(snapshot: dict[str, Any]) -> dict[str, str]:
    return {item["location"]: item["reason"] for item in snapshot["rejected"]}


def expected(locations: dict[Path, bp.Case]) -> dict[str, str]:
    return {package.printable(str(location)): case.words for location, case in locations.items()}


def all_rejected(reasons: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(words in reasons.get(location, "") for location, words in wanted.items())


def stop_cleanly(process: Any) -> str:
    code, _, err = process.stop()
    assert code == 0, err
    return err


def tracebacks(log: str) -> list[str]:
    """Log lines with a traceback, but the supervisor's (a supervised failure is logged so)."""
    return [line for line in log.splitlines() if "Traceback" in line and "eprd.supervisor" not in line]


async def test_start_up_with_every_bad_version(eprd_process: Any, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "good", "1.0.0")
    bad = {case.write(root): case for case in bp.CASES}
    process = start(eprd_process, tmp_path, root)
    async with aiohttp.ClientSession() as http:
        assert await served(http, process.base) == {("good", "1.0.0")}
        snapshot = await fetch_json(http, process.pprof + "snapshot")
        reasons = rejected_reasons(snapshot)
        wanted = expected(bad)
        assert all_rejected(reasons, wanted), json.dumps(reasons, indent=1)
    log = stop_cleanly(process)
    assert tracebacks(log) == []
    for location in wanted:  # one ERROR line per rejected version, with its path
        assert location in log or json.dumps(location)[1:-1] in log


async def test_live_reload_survives_every_bad_version(eprd_process: Any, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "good", "1.0.0")
    process = start(eprd_process, tmp_path, root)
    async with aiohttp.ClientSession() as http:

        async def watching() -> bool:
            return (await fetch_json(http, process.pprof + "snapshot"))["watcher"]["running"]

        await poll(watching, "the watcher runs")
        bad: dict[Path, bp.Case] = {}
        for case in bp.CASES:  # one after the other: each may be its own batch
            bad[case.write(root)] = case
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        pf.write_dir(root, "good", "2.0.0")  # a good change after all of them is still picked up
        wanted = expected(bad)

        async def caught_up() -> bool:
            snapshot = await fetch_json(http, process.pprof + "snapshot")
            good = await served(http, process.base) == {("good", "1.0.0"), ("good", "2.0.0")}
            return good and all_rejected(rejected_reasons(snapshot), wanted)

        await poll(caught_up, "every bad version rejected and good 2.0.0 served", timeout=90)
        snapshot = await fetch_json(http, process.pprof + "snapshot")
        task = snapshot["tasks"]["watcher"]
        assert task["state"] == "running"
        # watchfiles itself cannot report a change to a file name that is not UTF-8: its
        # watch ends, and the supervisor starts the watcher again.
        assert task["restarts"] == 0 or "Unable to decode path" in task["last_error"], task
    assert process.proc.poll() is None
    assert tracebacks(stop_cleanly(process)) == []


def watch_child(pid: int) -> int:
    """The watch process among eprd's children (spawned by multiprocessing)."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            return int(child)
    raise AssertionError("no watch process")


async def test_a_watcher_whose_process_dies_is_restarted(eprd_process: Any, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "good", "1.0.0")
    metrics_port = free_port()
    process = start(eprd_process, tmp_path, root, "-metrics-address", f"127.0.0.1:{metrics_port}")
    async with aiohttp.ClientSession() as http:

        async def watching() -> dict[str, Any] | None:
            snapshot = await fetch_json(http, process.pprof + "snapshot")
            return snapshot if snapshot["watcher"]["running"] else None

        await poll(watching, "the watcher runs")
        first = await asyncio.to_thread(watch_child, process.proc.pid)
        os.kill(first, signal.SIGKILL)

        async def restarted() -> dict[str, Any] | None:
            task = (await fetch_json(http, process.pprof + "snapshot"))["tasks"]["watcher"]
            return task if task["restarts"] == 1 and task["state"] == "running" else None

        task = await poll(restarted, "the watcher restarted")
        assert "ended unexpectedly" in task["last_error"]
        async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            text = await response.text()
        assert 'eprd_background_task_restarts_total{task="watcher"} 1.0' in text
        await poll(watching, "the watcher runs again")
        await asyncio.sleep(1.0)  # (the new watch process sets up its watches)
        pf.write_dir(root, "good", "2.0.0")

        async def picked_up() -> bool:
            return ("good", "2.0.0") in await served(http, process.base)

        await poll(picked_up, "a change after the restart is picked up")
    log = stop_cleanly(process)
    supervised = [line for line in log.splitlines() if "background task watcher failed" in line]
    assert len(supervised) == 1 and "stack_trace" in supervised[0], log
    assert tracebacks(log) == []
