"""``-workers N``: several serving processes on one port, one watcher, one /metrics, one stop.

Every test runs the real ``eprd -workers 2`` and talks to it over fresh connections; the worker
that answered is named by the ``X-Eprd-Worker`` header (sent only with more than one worker).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import pkgfactory as pf
from tests.conftest import free_port, write_config

DEADLINE = 60.0  # generous: 2 cores, many test processes at once


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (urllib opens one per request)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def until_every_worker(url: str, pids: set[str], accept: Callable[[bytes], bool] = lambda body: True) -> int:
    """Request ``url`` until every worker in ``pids`` answered with a body ``accept`` takes; the count."""
    deadline = time.monotonic() + DEADLINE
    seen: set[str] = set()
    count = 0
    while seen != pids:
        assert time.monotonic() < deadline, f"only {seen} of {pids} answered as expected"
        status, headers, body = get(url)
        count += 1
        if status == 200 and accept(body):
            seen.add(headers["X-Eprd-Worker"])
        else:
            time.sleep(0.02)
    return count


def worker_pids(base: str, expected: int = 2, exclude: set[str] = frozenset()) -> set[str]:
    """The pids of the workers answering now (requests until ``expected`` distinct ones answered)."""
    deadline = time.monotonic() + DEADLINE
    seen: set[str] = set()
    while len(seen) < expected:
        assert time.monotonic() < deadline, f"only workers {seen} answered"
        try:
            status, headers, _ = get(base + "/health")
        except OSError:
            time.sleep(0.05)
            continue
        if status == 200 and headers.get("X-Eprd-Worker") not in exclude:
            seen.add(headers["X-Eprd-Worker"])
    return seen


@pytest.fixture
def group(eprd_process, tmp_path: Path):
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    pf.write_dir(root, "beta", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    metrics_port = free_port()
    process = eprd_process(
        ["-config", str(config), "-workers", "2", "-metrics-address", f"127.0.0.1:{metrics_port}"],
        {"EPR_REQUIRE_PACKAGE_SIGNATURES": "false"},
    )
    process.wait_healthy()
    process.metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    process.root = root
    return process


def test_both_workers_serve_the_same_port(group) -> None:
    pids = worker_pids(group.base)
    assert len(pids) == 2
    assert str(group.proc.pid) not in pids  # the supervisor itself does not serve
    until_every_worker(group.base + "/package/alpha/1.0.0/", pids, lambda b: json.loads(b)["name"] == "alpha")


def test_a_live_edit_reaches_every_worker(group) -> None:
    pids = worker_pids(group.base)
    manifest = group.root / "alpha" / "1.0.0" / "manifest.yml"
    manifest.write_text(manifest.read_text().replace("Alpha package", "Alpha, edited live"))
    until_every_worker(
        group.base + "/package/alpha/1.0.0/", pids, lambda b: json.loads(b)["title"] == "Alpha, edited live"
    )
    pf.write_dir(group.root, "gamma", "1.0.0")  # a new package too
    until_every_worker(group.base + "/package/gamma/1.0.0/", pids)


def _requests_total(text: str, path: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("epr_http_requests_total{") and f'path="{path}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_the_requests_of_every_worker(group) -> None:
    pids = worker_pids(group.base)
    count = until_every_worker(group.base + "/search", pids)
    status, headers, body = get(group.metrics)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert _requests_total(text, "/search") == count
    assert "epr_service_info{" in text
    assert "process_resident_memory_bytes" in text
    assert get(group.metrics.replace("/metrics", "/other"))[0] == 404


def test_a_killed_worker_is_replaced(group) -> None:
    pids = worker_pids(group.base)
    victim = sorted(pids)[0]
    os.kill(int(victim), signal.SIGKILL)
    survivor = pids - {victim}
    replacement = worker_pids(group.base, expected=1, exclude=pids)
    assert worker_pids(group.base) == survivor | replacement
    # The replacement serves what changed after the supervisor loaded, too.
    manifest = group.root / "beta" / "1.0.0" / "manifest.yml"
    manifest.write_text(manifest.read_text().replace("Beta package", "Beta, after the crash"))
    until_every_worker(
        group.base + "/package/beta/1.0.0/",
        survivor | replacement,
        lambda b: json.loads(b)["title"] == "Beta, after the crash",
    )
    code, _, err = group.stop()
    assert code == 0, err
    lost = [json.loads(line) for line in err.splitlines() if "exited unexpectedly" in line]
    assert len(lost) == 1 and lost[0]["process"]["pid"] == group.proc.pid, err
    assert "killed by signal 9" in lost[0]["message"]


def test_workers_out_of_file_descriptors_pause_accepting_then_serve_again(group) -> None:
    pids = worker_pids(group.base)
    for pid in pids:  # a few descriptors more than each worker holds now
        resource.prlimit(int(pid), resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + 8,) * 2)
    clients = []
    try:
        for _ in range(60):  # connected by the kernel, more than the workers can accept
            clients.append(socket.create_connection(("127.0.0.1", group.port), timeout=10))
        deadline = time.monotonic() + DEADLINE
        while group.stderr_text().count("cannot accept connections for 1 s") < 2:
            assert time.monotonic() < deadline, group.stderr_text()
            time.sleep(0.05)
    finally:
        for client in clients:
            client.close()
    assert worker_pids(group.base) == pids  # both serve again, neither was replaced
    code, _, err = group.stop()
    assert code == 0, err
    assert "exited unexpectedly" not in err and "Traceback" not in err, err


def test_sigterm_stops_every_worker_gracefully(group) -> None:
    pids = worker_pids(group.base)
    group.proc.send_signal(signal.SIGTERM)
    code, _, err = group.stop()
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    stopped = {str(line["process"]["pid"]) for line in lines if line["message"] == "stopped"}
    assert pids | {str(group.proc.pid)} <= stopped, err
    draining = {
        str(line["process"]["pid"]) for line in lines if line["message"].startswith("shutting down: no new")
    }
    assert pids <= draining


def test_without_workers_there_is_no_worker_header(eprd_process, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    process = eprd_process(["-config", str(config)], {"EPR_REQUIRE_PACKAGE_SIGNATURES": "false"})
    process.wait_healthy()
    assert "X-Eprd-Worker" not in get(process.base + "/search")[1]


def test_httpprof_is_served_by_every_worker(eprd_process, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    pprof = f"http://127.0.0.1:{free_port()}"
    process = eprd_process(
        ["-config", str(config), "-httpprof", pprof.removeprefix("http://")],
        {"EPR_REQUIRE_PACKAGE_SIGNATURES": "false", "EPR_WORKERS": "2"},  # (the variable, for once)
    )
    process.wait_healthy()
    pids = worker_pids(process.base)
    until_every_worker(
        pprof + "/debug/pprof/snapshot", pids, lambda b: json.loads(b)["package_versions"] == 1
    )


def test_a_busy_port_fails_the_start(eprd_process, tmp_path: Path) -> None:
    import socket

    config = write_config(tmp_path / "config.yml", [tmp_path])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = eprd_process(["-config", str(config), "-workers", "2", "-address", f"127.0.0.1:{port}"])
        code, _, err = process.wait_exit(timeout=DEADLINE)
    assert code == 1
    assert "Init failed: cannot listen on" in err


def test_workers_must_be_positive(eprd_process, tmp_path: Path) -> None:
    process = eprd_process(["-workers", "0"])
    code, _, err = process.wait_exit(timeout=DEADLINE)
    assert code == 2
    assert "workers must be greater than 0" in err


def test_a_worker_that_cannot_start_stops_the_group(eprd_process, tmp_path: Path) -> None:
    root = tmp_path / "packages"
    pf.write_dir(root, "alpha", "1.0.0")
    config = write_config(tmp_path / "config.yml", [root])
    process = eprd_process(
        ["-config", str(config), "-workers", "2", "-favicon", str(tmp_path / "missing.ico")],
        {"EPR_REQUIRE_PACKAGE_SIGNATURES": "false"},
    )
    code, _, err = process.wait_exit(timeout=DEADLINE)
    assert code == 1, err
    assert "Init failed: cannot read -favicon" in err
    assert "could not start; stopping every worker" in err
    assert "exited unexpectedly" not in err  # not restarted over and over


def _children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` and their command lines."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            pass
    return out


def test_a_killed_watch_process_is_started_again(group) -> None:
    pids = worker_pids(group.base)
    watchers = [pid for pid, cmd in _children(group.proc.pid).items() if "spawn_main" in cmd]
    assert len(watchers) == 1, _children(group.proc.pid)
    os.kill(watchers[0], signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE
    while True:  # a new watch process (its READY makes every worker compare stamps)
        now = [pid for pid, cmd in _children(group.proc.pid).items() if "spawn_main" in cmd]
        if now and now != watchers:
            break
        assert time.monotonic() < deadline, "no new watch process"
        time.sleep(0.1)
    time.sleep(1.0)  # (its watches are set up before it reports; an edit before that is caught by READY)
    manifest = group.root / "alpha" / "1.0.0" / "manifest.yml"
    manifest.write_text(manifest.read_text().replace("Alpha package", "Alpha, after the watcher died"))
    until_every_worker(
        group.base + "/package/alpha/1.0.0/",
        pids,
        lambda b: json.loads(b)["title"] == "Alpha, after the watcher died",
    )
    code, _, err = group.stop()
    assert code == 0, err
    assert "the watch process ended unexpectedly" in err
