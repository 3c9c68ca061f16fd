#!/usr/bin/env python3
"""eprd benchmark suite: one command, numbers and ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/run.py [--quick] [--versions 2000,10000] [--only throughput,startup,live]

Measures (see benchmarks/README.md for what each number means):

* throughput: eprd and nginx (serving eprd's own response bytes as static files) side by
  side under wrk, for /search, a filtered /search, /categories, a large /package document
  and a ~6 MB download; requests/s, p50/p99, MB/s and the eprd/nginx ratio;
* startup: cold (fresh -cache-dir) and warm (same -cache-dir) start until /health?ready=true
  and /search answer 200, RSS after load, and the rebuild time of one manifest edit
  (the ``snapshot swapped`` log line) on each collection size;
* live: while wrk hits /search with 8 connections, edits of a copy of a few hundred
  package versions and the time until each edit is visible through the HTTP API.

Collections are generated with benchmarks/generate.py into benchmarks/out/collections
and reused while the generator is unchanged. Results: a table on stdout and
benchmarks/out/results.json. Needs nginx (Debian: nginx-light) and wrk:
``apt-get install -y nginx-light wrk``. Every process started here is stopped at the end,
also on Ctrl-C and errors.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import gzip
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
COLLECTIONS = OUT / "collections"
WORK = OUT / "work"
sys.path.insert(0, str(BENCH))

import generate  # noqa: E402  (benchmarks/generate.py)

# Targets of issues 3 and 4, printed next to the measurements (never asserted).
TARGETS = {
    "json_ratio": 0.33,  # eprd/nginx requests/s
    "json_p99_ms": 25.0,
    "download_ratio": 0.75,  # eprd/nginx MB/s
    "cold_s": {2000: 5.0, 10000: 20.0},
    "warm_s": {10000: 2.0},
    "rss_mb": {2000: 200.0},
    "live_median_s": 0.5,
    "live_worst_s": 2.0,
    "live_errors": 0,
}
FILTERED_SEARCH = "/search?category=security&kibana.version=8.15.0"
EDIT_KINDS = (
    "manifest_title",
    "data_stream_manifest",
    "add_version",
    "remove_version",
    "add_zip",
    "atomic_rename",
)
WRK_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'EPRD_BENCH {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------------


class Processes:
    """Every child this run starts; all of them are stopped by :meth:`stop_all`."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[Any]] = []

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        # Own session: a terminal's Ctrl-C reaches only this script, which stops the children in order.
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait: float = 10.0) -> float:
        """Signal ``proc``'s process group and wait; SIGKILL after ``wait`` s. Returns seconds taken."""
        started = time.monotonic()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Children the group leader left behind (workers), by the group id we created.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.children:
            self.children.remove(proc)
        return time.monotonic() - started

    def stop_all(self) -> None:
        for proc in list(reversed(self.children)):
            self.stop(proc, wait=5.0)


PROCS = Processes()


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, plus the RSS of its descendants (worker processes)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        return out
    children = 0
    parents = {pid}
    changed = True
    stats: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stats[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    while changed:
        changed = False
        for child, parent in stats.items():
            if parent in parents and child not in parents:
                parents.add(child)
                changed = True
    for child in parents - {pid}:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{child}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    children += int(line.split()[1])
    out["children_rss"] = children
    return out


# --- HTTP -----------------------------------------------------------------------------------------


class Client:
    """A keep-alive HTTP/1.1 client for polling; reconnects after errors."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.errors = 0

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, headers=headers or {})
                resp = self.conn.getresponse()
                body = resp.read()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.close()
                return resp.status, hdrs, body
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def try_get(port: int, path: str, timeout: float = 5.0) -> int | None:
    """Status of a one-off GET, None when the server does not answer (yet)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.01) -> float | None:
    """Poll ``check`` every ``interval`` s; seconds until it held, None on timeout."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(interval)


# --- wrk ------------------------------------------------------------------------------------------


def wrk_lua() -> str:
    path = WORK / "report.lua"
    if not path.exists():
        path.write_text(WRK_LUA)
    return str(path)


def wrk_args(
    url: str, seconds: float, connections: int, threads: int, headers: dict[str, str] | None
) -> list[str]:
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        wrk_lua(),
    ]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    return [*args, url]


def parse_wrk(output: str) -> dict[str, Any]:
    match = re.search(r"^EPRD_BENCH (\{.*\})$", output, re.M)
    if not match:
        raise RuntimeError(f"wrk gave no summary:\n{output[-2000:]}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")}
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "mb_s": round(raw["bytes"] / seconds / 1e6, 2) if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "errors_total": sum(errors.values()),
    }


def run_wrk(
    url: str, seconds: float, connections: int = 32, threads: int = 2, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    proc = PROCS.start(
        wrk_args(url, seconds, connections, threads, headers),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=seconds + 60)
    finally:
        PROCS.stop(proc)
    return parse_wrk(output)


# --- eprd and nginx -------------------------------------------------------------------------------


class Eprd:
    """One eprd process on a free port, its stderr in a log file.

    ``cwd``, ``env`` and ``revision`` default to this checkout, the current environment and its
    commit; benchmarks/compare.py passes another checkout (a git worktree on ``PYTHONPATH``).
    """

    def __init__(
        self,
        config: str,
        cache_dir: Path,
        name: str,
        log_level: str = "warn",
        extra: list[str] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        revision: str | None = None,
    ) -> None:
        # eprd's bytecode, as an installed eprd has it (pip compiles at install; the image keeps
        # it). In a checkout under PYTHONDONTWRITEBYTECODE it is never written, and every start
        # compiled all of eprd again (about 0.1 s of CPU).
        compileall.compile_dir(str((cwd or ROOT) / "eprd"), quiet=1)
        self.port = free_port()
        self.log_path = WORK / "logs" / f"eprd-{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable, "-m", "eprd",
            "-address", f"127.0.0.1:{self.port}",
            "-config", config,
            "-require-package-signatures=false",
            "-log-level", log_level,
            "-log-type", "ecs",
            "-cache-dir", str(cache_dir),
            "-shutdown-timeout", "2s",
            *(extra or []),
        ]  # fmt: skip
        self.args = args
        self.revision = revision or eprd_revision()
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.started = time.monotonic()
        self.proc = PROCS.start(
            args, cwd=str(cwd or ROOT), env=env, stdout=self.log_file, stderr=subprocess.STDOUT
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_started(self, timeout: float) -> dict[str, float | None]:
        """Seconds from process start until /health?ready=true and then /search answer 200."""

        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"eprd exited with {self.proc.returncode}; see {self.log_path}")
            return try_get(self.port, "/health?ready=true") == 200

        if wait_for(ready, timeout) is None:
            raise RuntimeError(f"eprd not ready after {timeout} s; see {self.log_path}")
        t_ready = time.monotonic() - self.started
        wait_for(lambda: try_get(self.port, "/search", timeout=60) == 200, timeout)
        t_search = time.monotonic() - self.started
        return {"ready_s": round(t_ready, 3), "search_s": round(t_search, 3)}

    def log_records(self, offset: int = 0) -> list[dict[str, Any]]:
        """ECS log lines written so far (from byte ``offset``), flattened to dotted keys."""
        self.log_file.flush()
        records = []
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            for line in fh:
                try:
                    records.append(flatten(json.loads(line)))
                except ValueError:
                    records.append({"message": line.decode(errors="replace").rstrip(), "log.level": "raw"})
        return records

    def log_size(self) -> int:
        self.log_file.flush()
        return self.log_path.stat().st_size

    def stop(self) -> float:
        taken = PROCS.stop(self.proc, signal.SIGTERM, wait=15.0)
        self.log_file.close()
        return round(taken, 3)


def eprd_revision() -> str:
    """The eprd commit a process is started from, ``+dirty`` when eprd/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=str(ROOT), capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "eprd"], cwd=str(ROOT), capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    out[prefix[:-1]] = value
    return out


class Nginx:
    """nginx in the foreground, serving ``root`` with one location per file and its Content-Type."""

    def __init__(self, root: Path, content_types: dict[str, str], workers: int | str = "auto") -> None:
        self.port = free_port()
        base = WORK / "nginx"
        for sub in ("tmp", "logs"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        locations = "\n".join(
            f"      location = {path} {{ default_type {ctype}; }}"
            for path, ctype in sorted(content_types.items())
        )
        temp = "\n".join(
            f"  {kind}_temp_path {base}/tmp/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = f"""{user}worker_processes {workers};
daemon off;
pid {base}/nginx.pid;
error_log {base}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  open_file_cache max=1000 inactive=60s;
  gzip_static on;
  types {{ }}
  default_type application/octet-stream;
{temp}
  server {{
      listen 127.0.0.1:{self.port};
      root {root};
{locations}
  }}
}}
"""
        self.conf = base / "nginx.conf"
        self.conf.write_text(conf)
        self.proc = PROCS.start(
            ["nginx", "-p", str(base), "-e", str(base / "logs" / "error.log"), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(base / "logs" / "stderr.log", "wb"),  # noqa: SIM115
        )
        if wait_for(lambda: try_get(self.port, "/") is not None, 10) is None:
            raise RuntimeError(f"nginx did not start; see {base / 'logs'}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        PROCS.stop(self.proc, signal.SIGQUIT)


# --- collections ----------------------------------------------------------------------------------


def generator_digest() -> str:
    return hashlib.sha1((BENCH / "generate.py").read_bytes()).hexdigest()[:8]


def shape(total: int) -> tuple[int, int]:
    """(packages, versions per package) for about ``total`` versions."""
    per = 20 if total >= 5000 else 10
    return max(1, round(total / per)), per


def collection(total: int, seed: int, zips: float) -> dict[str, Any]:
    """The generated collection of ``total`` versions, generated now unless cached."""
    packages, per = shape(total)
    digest = generator_digest()
    folder = COLLECTIONS / f"v{packages * per}-{packages}x{per}-s{seed}-z{zips}-g{digest}"
    meta_path = folder / "collection.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        log(f"reusing {meta['versions_total']} versions in {folder}")
    else:
        if COLLECTIONS.exists():  # collections of an older generator: stale, remove them
            for old in COLLECTIONS.iterdir():
                if old.is_dir() and not old.name.endswith(f"-g{digest}"):
                    log(f"removing stale collection {old}")
                    shutil.rmtree(old)
        log(f"generating {packages} packages x {per} versions into {folder} ...")
        meta = generate.generate(str(folder), packages, per, seed, zips, os.cpu_count() or 1)
        log(
            f"generated {meta['versions_total']} versions, {meta['files_total']} files, "
            f"{meta['bytes_total'] / 1e6:.0f} MB in {meta['seconds']} s"
        )
    meta["folder"] = str(folder)
    return meta


def edit_candidates(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Packages whose highest version is a GA folder package (edits show in /search), big one last."""
    out = []
    for pkg in meta["packages"]:
        top = pkg["versions"][-1]
        if (
            "-" not in top["version"]
            and top["kind"] == "dir"
            and len(pkg["versions"]) >= 2
            and not pkg["big"]
        ):
            out.append(pkg)
    return out


def version_dir(meta: dict[str, Any], name: str, version: str) -> Path:
    return Path(meta["folder"]) / "packages" / name / version


def next_major(versions: list[str]) -> str:
    return f"{max(int(v.split('.')[0]) for v in versions) + 1}.0.0"


def replace_top_level(text: str, key: str, value: str) -> str:
    new, count = re.subn(rf"^{re.escape(key)}: .*$", f"{key}: {value}", text, count=1, flags=re.M)
    if not count:
        raise RuntimeError(f"no top-level {key!r} in manifest")
    return new


# --- phases ---------------------------------------------------------------------------------------


def throughput(meta: dict[str, Any], opts: argparse.Namespace, results: dict[str, Any]) -> None:
    """eprd against nginx serving the same bytes, endpoint by endpoint."""
    big, big_version = meta["big"]["name"], meta["big"]["version"]
    endpoints = [
        ("search", "/search", None, "json"),
        ("search_filtered", FILTERED_SEARCH, None, "json"),
        ("categories", "/categories", None, "report"),  # measured; issue 4 sets no target for it
        ("package", f"/package/{big}/{big_version}/", None, "json"),
        ("download", f"/epr/{big}/{big}-{big_version}.zip", None, "download"),
        ("search_gzip", "/search", {"Accept-Encoding": "gzip"}, "extra"),
    ]
    cache_dir = WORK / "cache-throughput"
    shutil.rmtree(cache_dir, ignore_errors=True)
    log(f"throughput: starting eprd on {meta['versions_total']} versions")
    eprd = Eprd(meta["config"], cache_dir, "throughput")
    section: dict[str, Any] = {"versions": meta["versions_total"], "eprd": eprd.revision, "endpoints": {}}
    results["throughput"] = section
    nginx = None
    try:
        section["start"] = eprd.wait_started(opts.start_timeout)
        client = Client(eprd.port, timeout=120)
        root = WORK / "nginx-root"
        shutil.rmtree(root, ignore_errors=True)
        (root / "e").mkdir(parents=True)
        content_types: dict[str, str] = {}
        urls: dict[str, tuple[str, str]] = {}
        for key, path, headers, kind in endpoints:
            status, hdrs, body = client.get(path, headers)
            info = {
                "path": path,
                "status": status,
                "bytes": len(body),
                "content_type": hdrs.get("content-type", ""),
                "content_encoding": hdrs.get("content-encoding", "identity"),
                "kind": kind,
            }
            section["endpoints"][key] = info
            if status != 200:
                log(f"  {path}: eprd answered {status}, skipped")
                continue
            static = f"/e/{key}"
            content_types[static] = hdrs.get("content-type", "application/octet-stream").split(";")[0]
            if key == "search_gzip":
                plain = section["endpoints"]["search"]
                (root / "e" / key).write_bytes((root / "e" / "search").read_bytes())
                gz = (
                    body
                    if info["content_encoding"] == "gzip"
                    else gzip.compress((root / "e" / "search").read_bytes(), 6)
                )
                (root / "e" / f"{key}.gz").write_bytes(gz)
                info["nginx_bytes_gz"] = len(gz)
                content_types[static] = plain["content_type"].split(";")[0]
            else:
                (root / "e" / key).write_bytes(body)
            urls[key] = (path, static)
        nginx = Nginx(root, content_types)
        for key, (path, static) in urls.items():
            _, _, a = client.get(path)
            nclient = Client(nginx.port)
            _, _, b = nclient.get(static)
            nclient.close()
            section["endpoints"][key]["same_bytes"] = a == b
        section["download_checks"] = {
            "eprd": download_checks(eprd.port, endpoints[4][1]),
            "nginx": download_checks(nginx.port, "/e/download"),
            "eprd_tar_gz": download_checks(eprd.port, endpoints[4][1][: -len(".zip")] + ".tar.gz"),
        }
        client.close()
        for key, path, headers, _ in endpoints:
            if key not in urls:
                continue
            row = section["endpoints"][key]
            row["loadavg_before"] = os.getloadavg()
            runs: dict[str, list[dict[str, Any]]] = {"eprd": [], "nginx": []}
            for _ in range(opts.repeat):
                for server, url in (("eprd", eprd.base + path), ("nginx", nginx.base + urls[key][1])):
                    log(f"  wrk {key} {server}: {opts.warmup} s warm-up + {opts.duration} s")
                    if opts.warmup:
                        run_wrk(url, opts.warmup, opts.connections, opts.threads, headers)
                    runs[server].append(run_wrk(url, opts.duration, opts.connections, opts.threads, headers))
            for server, measured in runs.items():
                # With --repeat, the run with the median requests/s stands for the server.
                row[server] = sorted(measured, key=lambda r: r["rps"])[len(measured) // 2]
                if len(measured) > 1:
                    row[f"{server}_rps_runs"] = [r["rps"] for r in measured]
            e, n = row["eprd"], row["nginx"]
            row["ratio_rps"] = round(e["rps"] / n["rps"], 3) if n["rps"] else None
            row["ratio_mb_s"] = round(e["mb_s"] / n["mb_s"], 3) if n["mb_s"] else None
            if not eprd.alive():
                raise RuntimeError(f"eprd died during the {key} run; see {eprd.log_path}")
        section["rss_after_load_kb"] = rss_kb(eprd.proc.pid)
        section["eprd_log_errors"] = count_errors(eprd.log_records())
    finally:
        if nginx is not None:
            nginx.stop()
        section["stop_s"] = eprd.stop()


def download_checks(port: int, path: str) -> dict[str, Any]:
    client = Client(port, timeout=120)
    try:
        status, hdrs, body = client.get(path)
        out: dict[str, Any] = {
            "status": status,
            "bytes": len(body),
            "content_type": hdrs.get("content-type"),
            "content_length": hdrs.get("content-length"),
            "content_length_ok": hdrs.get("content-length") == str(len(body)),
            "accept_ranges": hdrs.get("accept-ranges"),
        }
        rstatus, rhdrs, rbody = client.get(path, {"Range": "bytes=100-1123"})
        out["range_status"] = rstatus
        out["content_range"] = rhdrs.get("content-range")
        out["range_ok"] = rstatus == 206 and rbody == body[100:1124]
        hstatus, hhdrs, _ = client.get(path, method="HEAD")
        out["head_status"] = hstatus
        out["head_content_length"] = hhdrs.get("content-length")
        return out
    finally:
        client.close()


def count_errors(records: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [
        r for r in records if str(r.get("log.level", "")).lower() in ("error", "critical", "fatal", "raw")
    ]
    samples = sorted({str(r.get("message", ""))[:160] for r in errors})[:5]
    return {"count": len(errors), "samples": samples}


def short_load(eprd: Eprd, meta: dict[str, Any], seconds: float, opts: argparse.Namespace) -> dict[str, Any]:
    big, big_version = meta["big"]["name"], meta["big"]["version"]
    out = {}
    for key, path in (
        ("search", "/search"),
        ("search_filtered", FILTERED_SEARCH),
        ("categories", "/categories"),
        ("package", f"/package/{big}/{big_version}/"),
    ):
        res = run_wrk(eprd.base + path, seconds, opts.connections, opts.threads)
        out[key] = {"rps": res["rps"], "p99_ms": res["p99_ms"], "errors": res["errors_total"]}
    return out


def startup(meta: dict[str, Any], opts: argparse.Namespace, results: dict[str, Any]) -> None:
    """Cold and warm start, RSS after a short load, rebuild time of one manifest edit."""
    total = meta["versions_total"]
    section: dict[str, Any] = {"versions": total, "files": meta["files_total"], "bytes": meta["bytes_total"]}
    results.setdefault("startup", {})[str(total)] = section
    cache_dir = WORK / f"cache-startup-{total}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    log(f"startup {total}: reading every file once, so that the OS page cache holds the collection")
    section["page_cache_fill_s"] = fill_page_cache(Path(meta["config"]).parent)
    poll_needed = False
    for phase in ("cold", "warm", "warm_nowatch"):
        log(f"startup {total}: {phase} start")
        extra = ["-package-paths-enable-watcher=false"] if phase == "warm_nowatch" else []
        eprd = Eprd(meta["config"], cache_dir, f"{phase}-{total}", log_level="info", extra=extra)
        run: dict[str, Any] = {"eprd": eprd.revision}
        section[phase] = run
        try:
            run.update(eprd.wait_started(opts.start_timeout))
            loaded = [r for r in eprd.log_records() if r.get("message") == "packages loaded"]
            if loaded:
                run["packages_loaded_s"] = round(loaded[0].get("event.duration", 0) / 1e9, 3)
                run["packages_served"] = loaded[0].get("packages.served")
                run["packages_rejected"] = loaded[0].get("packages.rejected")
            run["rss_at_ready_kb"] = rss_kb(eprd.proc.pid)
            if phase == "cold":
                log(f"startup {total}: short load ({opts.load_seconds} s per endpoint) for RSS")
                run["load"] = short_load(eprd, meta, opts.load_seconds, opts)
                run["rss_after_load_kb"] = rss_kb(eprd.proc.pid)
            elif phase == "warm":
                section["rebuild"] = rebuild(eprd, meta, opts)
                failed = section["rebuild"].get("error") and section["rebuild"].get("watcher_error")
                missed = (section["rebuild"].get("coverage") or {}).get("missed")
                poll_needed = bool(failed or missed)
            run["log_errors"] = count_errors(eprd.log_records())
        finally:
            run["stop_s"] = eprd.stop()
        if phase in ("cold", "warm") and opts.start_repeat > 1:
            repeat_start(meta, cache_dir, phase, run, opts)
    if poll_needed:
        # inotify could not watch everything (fs.inotify.max_user_watches): measure with polling instead.
        log(
            f"startup {total}: the watcher failed or missed edits; measuring with -package-paths-watcher-poll"
        )
        eprd = Eprd(
            meta["config"],
            cache_dir,
            f"poll-{total}",
            log_level="info",
            extra=["-package-paths-watcher-poll"],
        )
        try:
            section["poll_start"] = eprd.wait_started(opts.start_timeout)
            inotify = section["rebuild"]
            section["rebuild"] = rebuild(eprd, meta, opts)
            section["rebuild"]["mode"] = "poll"
            section["rebuild"]["inotify"] = inotify
        finally:
            eprd.stop()


def fill_page_cache(root: Path) -> float:
    """Read every file under ``root`` once; the seconds it took."""
    started = time.monotonic()
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError), open(os.path.join(folder, name), "rb") as fh:
                while fh.read(1 << 20):
                    pass
    return round(time.monotonic() - started, 1)


def repeat_start(meta: dict[str, Any], cache_dir: Path, phase: str, run: dict[str, Any], opts: Any) -> None:
    """Start eprd again (opts.start_repeat runs in all) and report the median ready time.

    Start-up times on a shared machine vary by tenths of a second from run to run.
    """
    times = [run["ready_s"]]
    for i in range(1, opts.start_repeat):
        if phase == "cold":
            shutil.rmtree(cache_dir, ignore_errors=True)
        eprd = Eprd(meta["config"], cache_dir, f"{phase}-{meta['versions_total']}-{i}", log_level="warn")
        try:
            times.append(eprd.wait_started(opts.start_timeout)["ready_s"])
        finally:
            eprd.stop()  # (writes the index cache, which the next warm start reads)
    run["ready_s_first"] = run["ready_s"]
    run["ready_s_runs"] = times
    run["ready_s"] = statistics.median(times)


def swap_lines(eprd: Eprd, offset: int) -> list[dict[str, Any]]:
    return [r for r in eprd.log_records(offset) if r.get("message") == "snapshot swapped"]


def watcher_failed(eprd: Eprd) -> str | None:
    for record in eprd.log_records():
        message = str(record.get("message", ""))
        if "cannot watch package paths" in message or "live reload is off" in message:
            return message
    return None


class TitleEdit:
    """Edits of the top-level title of one package version's manifest, restored byte- and mtime-exact."""

    def __init__(self, eprd: Eprd, meta: dict[str, Any], pkg: dict[str, Any], client: Client) -> None:
        self.eprd = eprd
        self.client = client
        self.name = pkg["name"]
        self.version = pkg["versions"][-1]["version"]
        self.manifest = version_dir(meta, self.name, self.version) / "manifest.yml"
        self.original = self.manifest.read_bytes()
        self.stat = self.manifest.stat()
        self.doc_path = f"/package/{self.name}/{self.version}/"
        match = re.search(rb"^title: (.*)$", self.original, re.M)
        self.title = match.group(1).decode().strip().strip("'\"") if match else ""
        self.touched = False

    def shows(self, title: str) -> bool:
        try:
            status, _, body = self.client.get(self.doc_path)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and json.loads(body).get("title") == title

    def edit(self, title: str, timeout: float) -> dict[str, Any]:
        """Write the new title; seconds until the document shows it and the swap lines logged meanwhile."""
        offset = self.eprd.log_size()
        started = time.monotonic()
        self.touched = True
        self.manifest.write_text(replace_top_level(self.original.decode(), "title", title))
        visible = wait_for(lambda: self.shows(title), timeout)
        if visible is not None:
            # The swap line is written right after the swap; give it a moment to reach the file.
            wait_for(lambda: bool(swap_lines(self.eprd, offset)), 2.0, 0.02)
        return {
            "visible_s": None if visible is None else round(time.monotonic() - started, 3),
            "swaps": [
                {
                    "duration_s": round(s.get("event.duration", 0) / 1e9, 4),
                    **{
                        key.split(".", 1)[1]: s.get(key)
                        for key in (
                            "packages.added",
                            "packages.changed",
                            "packages.removed",
                            "packages.rejected",
                        )
                    },
                }
                for s in swap_lines(self.eprd, offset)
            ],
        }

    def restore(self, wait: float) -> None:
        if not self.touched:
            return
        self.manifest.write_bytes(self.original)
        os.utime(self.manifest, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))
        self.touched = False
        # Let the restore be picked up before the next step (keeps the log in order).
        wait_for(lambda: self.shows(self.title), wait)


def inotify_watches(pid: int) -> int | None:
    """How many inotify watches ``pid`` holds (from /proc/<pid>/fdinfo)."""
    total, found = 0, False
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return None
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                lines = [line for line in fh if line.startswith("inotify wd:")]
        except OSError:
            continue
        if lines:
            found = True
            total += len(lines)
    return total if found else 0


def folder_count(meta: dict[str, Any]) -> int:
    """Folders under the collection's package paths (each needs an inotify watch); cached beside it."""
    cache = Path(meta["folder"]) / "folders.json"
    if cache.exists():
        return json.loads(cache.read_text())["folders"]
    count = sum(1 for _ in os.walk(meta["folder"]))
    cache.write_text(json.dumps({"folders": count}))
    return count


def rebuild(eprd: Eprd, meta: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """Rebuild time of one manifest edit (the swap log line), and whether edits anywhere are seen."""
    out: dict[str, Any] = {"mode": "inotify", "folders": folder_count(meta)}
    candidates = sorted(edit_candidates(meta), key=lambda p: p["name"])
    client = Client(eprd.port)
    target = TitleEdit(eprd, meta, candidates[len(candidates) // 2], client)
    editors = [target]
    try:
        time.sleep(0.5)
        if failed := watcher_failed(eprd):
            out["watcher_error"] = failed
        # Probe: the watcher sets up its watches after start-up; wait until an edit is seen at all.
        for attempt in range(4):
            probe = target.edit(f"{target.name} probe {attempt}", opts.visible_timeout)
            if probe["visible_s"] is not None or watcher_failed(eprd):
                break
        out["probe_visible_s"] = probe["visible_s"]
        out["inotify_watches"] = inotify_watches(eprd.proc.pid)
        if probe["visible_s"] is None:
            out["watcher_error"] = watcher_failed(eprd)
            out["error"] = f"edits were not visible within {opts.visible_timeout} s (watcher not running?)"
            return out
        samples = []
        for i in range(opts.rebuild_edits):
            samples.append(target.edit(f"{target.name} edit {i}", opts.visible_timeout))
            time.sleep(0.3)
        target.restore(5.0)
        out["package"] = f"{target.name}-{target.version}"
        out["samples"] = samples
        durations = [s["duration_s"] for sample in samples for s in sample["swaps"]]
        visible = [s["visible_s"] for s in samples if s["visible_s"] is not None]
        out["rebuild_median_s"] = round(statistics.median(durations), 4) if durations else None
        out["rebuild_max_s"] = max(durations) if durations else None
        out["visible_median_s"] = round(statistics.median(visible), 3) if visible else None
        out["swaps_per_edit"] = round(len(durations) / len(samples), 2) if samples else None
        # Coverage: one edit in each of several packages spread over the collection (by name), each
        # given several times the usual delay (polling mode needs a full scan of the tree per change).
        timeout = max(opts.coverage_timeout, 4 * (out["visible_median_s"] or 0))
        picks = sorted({round(i * (len(candidates) - 1) / (opts.coverage - 1)) for i in range(opts.coverage)})
        seen, missed = 0, []
        for index in picks:
            editor = TitleEdit(eprd, meta, candidates[index], client)
            editors.append(editor)
            result = editor.edit(f"{editor.name} coverage", timeout)
            if result["visible_s"] is None:
                missed.append(editor.name)
            else:
                seen += 1
            editor.restore(timeout)
        out["coverage"] = {"seen": seen, "tried": len(picks), "missed": missed, "timeout_s": timeout}
        out["inotify_watches"] = inotify_watches(eprd.proc.pid)
    finally:
        for editor in editors:
            editor.restore(5.0)
        client.close()
    return out


def live(meta: dict[str, Any], opts: argparse.Namespace, results: dict[str, Any]) -> None:
    """Edits under load; time until each is visible through the HTTP API."""
    folder = WORK / "live"
    shutil.rmtree(folder, ignore_errors=True)
    log(f"live: copying {meta['versions_total']} versions to {folder}")
    shutil.copytree(meta["folder"], folder, symlinks=True)
    config = folder / "config.yml"
    config.write_text(
        "package_paths:\n"
        f"  - {json.dumps(str(folder / 'packages'))}\n  - {json.dumps(str(folder / 'zips'))}\n"
    )
    copy = dict(meta, folder=str(folder), config=str(config))
    cache_dir = WORK / "cache-live"
    shutil.rmtree(cache_dir, ignore_errors=True)
    section: dict[str, Any] = {
        "versions": meta["versions_total"],
        "load": "wrk /search, 2 threads, 8 connections",
    }
    results["live"] = section
    eprd = Eprd(str(config), cache_dir, "live", log_level="warn")
    section["eprd"] = eprd.revision
    load = None
    client: Client | None = None
    try:
        section["start"] = eprd.wait_started(opts.start_timeout)
        client = Client(eprd.port)
        candidates = edit_candidates(copy)
        if not candidates:
            raise RuntimeError("no package in the live collection can be edited")
        load = PROCS.start(
            wrk_args(eprd.base + "/search", 3600, 8, 2, None),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1.0)
        # Probe until the watcher is running (it starts after the listener).
        probe_pkg = candidates[-1]
        probe = make_edit("manifest_title", copy, probe_pkg, client, 0)
        section["probe"] = run_edit(probe, opts.visible_timeout)
        edits: list[dict[str, Any]] = []
        section["edits"] = edits
        used = 0
        for round_no in range(opts.rounds):
            for kind in EDIT_KINDS:
                pkg = candidates[used % max(1, len(candidates) - 1)]
                used += 1
                edit = make_edit(kind, copy, pkg, client, round_no + 1)
                result = run_edit(edit, opts.visible_timeout)
                result.update(kind=kind, round=round_no + 1, package=pkg["name"], detail=edit["detail"])
                edits.append(result)
                log(
                    f"  live {kind} ({pkg['name']}): "
                    f"{'not visible' if result['visible_s'] is None else str(result['visible_s']) + ' s'}"
                )
                time.sleep(opts.settle)
        load_out = stop_load(load)
        load = None
        section["load_result"] = load_out
        section["poll_errors"] = client.errors
        section["eprd_log_errors"] = count_errors(eprd.log_records())
        visible = [e["visible_s"] for e in edits if e["visible_s"] is not None]
        section["not_visible"] = sum(1 for e in edits if e["visible_s"] is None)
        section["median_s"] = round(statistics.median(visible), 3) if visible else None
        section["worst_s"] = max(visible) if visible else None
        section["by_kind"] = {
            kind: {
                "median_s": round(statistics.median(v), 3)
                if (v := [e["visible_s"] for e in edits if e["kind"] == kind and e["visible_s"] is not None])
                else None,
                "worst_s": max(v) if v else None,
                "n": sum(1 for e in edits if e["kind"] == kind),
            }
            for kind in EDIT_KINDS
        }
        section["load_errors"] = load_out["errors_total"]
    finally:
        if load is not None:
            with contextlib.suppress(Exception):
                section["load_result"] = stop_load(load)
        if client is not None:
            client.close()
        section["stop_s"] = eprd.stop()


def stop_load(proc: subprocess.Popen[Any]) -> dict[str, Any]:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    PROCS.stop(proc)
    return parse_wrk(output)


def make_edit(
    kind: str, meta: dict[str, Any], pkg: dict[str, Any], client: Client, tag: int
) -> dict[str, Any]:
    """An edit: a function changing the files and a check that the HTTP API shows the change."""
    name = pkg["name"]
    version = pkg["versions"][-1]["version"]
    vdir = version_dir(meta, name, version)
    doc = f"/package/{name}/{version}/"

    def doc_json(path: str) -> dict[str, Any] | None:
        status, _, body = client.get(path)
        return json.loads(body) if status == 200 else None

    def search_versions() -> list[str]:
        status, _, body = client.get(f"/search?package={name}&all=true")
        return [p["version"] for p in json.loads(body)] if status == 200 else []

    def search_latest() -> str | None:
        status, _, body = client.get(f"/search?package={name}")
        items = json.loads(body) if status == 200 else []
        return items[0]["version"] if items else None

    if kind in ("manifest_title", "atomic_rename"):
        manifest = vdir / "manifest.yml"
        title = f"{name} {kind} {tag} {time.monotonic_ns()}"
        text = replace_top_level(manifest.read_text(), "title", title)

        def apply() -> None:
            if kind == "manifest_title":
                manifest.write_text(text)  # in place: truncate and write
            else:
                tmp = vdir / ".manifest.yml.tmp"
                tmp.write_text(text)
                os.replace(tmp, manifest)

        def check() -> bool:
            d = doc_json(doc)
            in_search = "-" in version or search_latest() == version  # prereleases are not in /search
            return bool(d and d.get("title") == title) and in_search

        return {"apply": apply, "check": check, "detail": f"{doc} title"}

    if kind == "data_stream_manifest":
        ds_dirs = sorted(p for p in (vdir / "data_stream").iterdir() if p.is_dir())
        ds_manifest = ds_dirs[0] / "manifest.yml"
        title = f"{ds_dirs[0].name} stream {tag} {time.monotonic_ns()}"
        text = replace_top_level(ds_manifest.read_text(), "title", title)

        def apply() -> None:
            ds_manifest.write_text(text)

        def check() -> bool:
            d = doc_json(doc)
            return bool(d) and any(ds.get("title") == title for ds in d.get("data_streams", []))

        return {"apply": apply, "check": check, "detail": f"{doc} data_streams[{ds_dirs[0].name}].title"}

    all_versions = [v["version"] for v in pkg["versions"]]
    if kind == "add_version":
        new = next_major(all_versions)
        target = vdir.parent / new
        pkg["versions"].append({"version": new, "kind": "dir", "files": 0, "bytes": 0})

        def apply() -> None:
            shutil.copytree(vdir, target)  # cp -r
            manifest = target / "manifest.yml"
            manifest.write_text(replace_top_level(manifest.read_text(), "version", new))

        def check() -> bool:
            return search_latest() == new and doc_json(f"/package/{name}/{new}/") is not None

        return {"apply": apply, "check": check, "detail": f"cp -r {version} {new}"}

    if kind == "remove_version":
        previous = [v for v in all_versions if v != version]
        pkg["versions"].pop()

        def apply() -> None:
            shutil.rmtree(vdir)

        def check() -> bool:
            status, _, _ = client.get(doc)
            return status == 404 and version not in search_versions() and search_latest() != version

        return {"apply": apply, "check": check, "detail": f"rm -r {version} (latest becomes {previous[-1]})"}

    if kind == "add_zip":
        new = next_major(all_versions)
        files = {str(p.relative_to(vdir)): p.read_bytes() for p in sorted(vdir.rglob("*")) if p.is_file()}
        files["manifest.yml"] = replace_top_level(files["manifest.yml"].decode(), "version", new).encode()
        body = generate.zip_bytes(f"{name}-{new}", files)
        target = Path(meta["folder"]) / "zips" / f"{name}-{new}.zip"
        pkg["versions"].append({"version": new, "kind": "zip", "files": len(files), "bytes": len(body)})

        def apply() -> None:
            target.write_bytes(body)

        def check() -> bool:
            return search_latest() == new and doc_json(f"/package/{name}/{new}/") is not None

        return {"apply": apply, "check": check, "detail": f"{target.name} ({len(body)} bytes)"}

    raise ValueError(kind)


def run_edit(edit: dict[str, Any], timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    edit["apply"]()
    applied = time.monotonic() - started

    def check() -> bool:
        try:
            return edit["check"]()
        except (OSError, http.client.HTTPException, ValueError):
            return False

    visible = wait_for(check, timeout)
    return {
        "apply_s": round(applied, 4),
        "visible_s": None if visible is None else round(time.monotonic() - started, 3),
    }


# --- report ---------------------------------------------------------------------------------------


def _le(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def _ge(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit


def coverage_text(coverage: dict[str, Any] | None) -> str:
    if not coverage:
        return "-"
    text = f"{coverage['seen']}/{coverage['tried']}"
    if coverage.get("missed"):
        text += f" (missed: {', '.join(coverage['missed'][:3])})"
    return text


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT MET")


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def target_for(mapping: dict[int, float], total: int) -> float | None:
    """The target of the nearest named size (2,000 or 10,000), only for sizes within 25 % of it."""
    for size, value in mapping.items():
        if abs(total - size) <= size * 0.25:
            return value
    return None


def assess(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issues 3 and 4 that this run measured: value, target, met."""
    checks: list[dict[str, Any]] = []

    def add(name: str, value: Any, target: str, ok: bool) -> None:
        checks.append({"target": name, "measured": value, "wanted": target, "met": ok})

    t = results.get("throughput") or {}
    for key, row in (t.get("endpoints") or {}).items():
        if "eprd" not in row or "nginx" not in row or row["kind"] in ("extra", "report"):
            continue
        if row["kind"] == "json":
            add(
                f"{key} req/s vs nginx",
                f"{fmt(row['ratio_rps'], 2)}x",
                f">= {TARGETS['json_ratio']}x",
                _ge(row["ratio_rps"], TARGETS["json_ratio"]),
            )
            add(
                f"{key} p99",
                f"{row['eprd']['p99_ms']:.1f} ms",
                f"<= {TARGETS['json_p99_ms']:.0f} ms",
                _le(row["eprd"]["p99_ms"], TARGETS["json_p99_ms"]),
            )
        else:
            add(
                f"{key} MB/s vs nginx",
                f"{fmt(row['ratio_mb_s'], 2)}x",
                f">= {TARGETS['download_ratio']}x",
                _ge(row["ratio_mb_s"], TARGETS["download_ratio"]),
            )
    for server, c in (t.get("download_checks") or {}).items():
        if server.startswith("eprd"):
            add(
                f"{server} Content-Length and Range",
                "ok" if c.get("content_length_ok") and c.get("range_ok") else "missing",
                "both",
                bool(c.get("content_length_ok") and c.get("range_ok")),
            )
    rss = (t.get("rss_after_load_kb") or {}).get("VmRSS")
    limit = target_for(TARGETS["rss_mb"], t.get("versions", 0))
    if rss and limit:
        add(
            f"RSS after load, {t['versions']:,} versions",
            f"{rss / 1024:.0f} MB",
            f"<= {limit:.0f} MB",
            rss / 1024 <= limit,
        )
    for total, sec in (results.get("startup") or {}).items():
        for phase in ("cold", "warm"):
            limit = target_for(TARGETS[f"{phase}_s"], int(total))
            value = (sec.get(phase) or {}).get("ready_s")
            if limit:
                add(
                    f"{phase} start, {int(total):,} versions",
                    f"{fmt(value, 2)} s",
                    f"<= {limit:.0f} s",
                    _le(value, limit),
                )
    for total, sec in (results.get("startup") or {}).items():
        cov = (sec.get("rebuild") or {}).get("inotify", sec.get("rebuild") or {}).get("coverage")
        if cov:
            add(
                f"watcher sees edits across {int(total):,} versions",
                f"{cov['seen']}/{cov['tried']} packages",
                "all",
                cov["seen"] == cov["tried"],
            )
    lv = results.get("live") or {}
    if "median_s" in lv:
        add(
            "live reload median",
            f"{fmt(lv['median_s'], 3)} s",
            f"<= {TARGETS['live_median_s']} s",
            _le(lv["median_s"], TARGETS["live_median_s"]),
        )
        add(
            "live reload worst",
            f"{fmt(lv['worst_s'], 3)} s ({lv['not_visible']} not visible)",
            f"<= {TARGETS['live_worst_s']} s",
            _le(lv["worst_s"], TARGETS["live_worst_s"]) and not lv["not_visible"],
        )
    if "load_errors" in lv:
        add("errors under load during edits", lv["load_errors"], "0", lv["load_errors"] == 0)
    return checks


def report(results: dict[str, Any]) -> str:
    out: list[str] = []
    t = results.get("throughput")
    if t:
        out.append(
            f"\nHTTP throughput on {t['versions']:,} versions (wrk {results['options']['threads']} threads, "
            f"{results['options']['connections']} connections, {results['options']['duration']} s per run)"
        )
        rows = []
        for key, row in t["endpoints"].items():
            if "eprd" not in row or "nginx" not in row:
                why = f"eprd answered {row['status']}" if row["status"] != 200 else "not measured"
                rows.append([key, row["path"], why, "", "", "", "", "", "", ""])
                continue
            e, n = row["eprd"], row["nginx"]
            if row["kind"] == "json":
                ok = (
                    row["ratio_rps"] is not None
                    and row["ratio_rps"] >= TARGETS["json_ratio"]
                    and e["p99_ms"] <= TARGETS["json_p99_ms"]
                )
                target = f">={TARGETS['json_ratio']}x req/s, p99<={TARGETS['json_p99_ms']:.0f}ms: {met(ok)}"
            elif row["kind"] == "download":
                ok = row["ratio_mb_s"] is not None and row["ratio_mb_s"] >= TARGETS["download_ratio"]
                target = f">={TARGETS['download_ratio']}x MB/s: {met(ok)}"
            elif row["kind"] == "report":
                target = "(no target in issue 4)"
            else:
                target = f"(no target; eprd sent {row['content_encoding']})"
            errs = e["errors_total"]
            rows.append(
                [
                    key,
                    f"{row['bytes']:,} B",
                    fmt(e["rps"]),
                    fmt(n["rps"]),
                    f"{fmt(row['ratio_rps'], 2)}x",
                    f"{e['p50_ms']:.1f}/{e['p99_ms']:.1f}",
                    f"{n['p50_ms']:.1f}/{n['p99_ms']:.1f}",
                    f"{e['mb_s']:,.0f}/{n['mb_s']:,.0f} ({fmt(row['ratio_mb_s'], 2)}x)",
                    f"{errs}",
                    target,
                ]
            )
        out.append(
            table(
                rows,
                [
                    "endpoint",
                    "body",
                    "eprd req/s",
                    "nginx req/s",
                    "ratio",
                    "eprd p50/p99 ms",
                    "nginx p50/p99 ms",
                    "MB/s eprd/nginx",
                    "eprd errors",
                    "target (issue 4)",
                ],
            )
        )
        checks = t.get("download_checks", {})
        for server, c in checks.items():
            length = "ok" if c.get("content_length_ok") else f"MISSING/WRONG ({c.get('content_length')})"
            out.append(
                f"  download {server}: status {c.get('status')}, {c.get('bytes'):,} B, "
                f"Content-Length {length}, "
                f"Accept-Ranges {c.get('accept_ranges')}, Range -> {c.get('range_status')} "
                f"{'ok' if c.get('range_ok') else 'NOT OK'}, HEAD {c.get('head_status')}"
            )
        rss = t.get("rss_after_load_kb", {})
        if rss:
            mb = rss.get("VmRSS", 0) / 1024
            limit = target_for(TARGETS["rss_mb"], t["versions"])
            workers = f", workers {rss['children_rss'] / 1024:.0f} MB" if rss.get("children_rss") else ""
            out.append(
                f"  eprd RSS after the load: {mb:.0f} MB (peak {rss.get('VmHWM', 0) / 1024:.0f} MB{workers})"
                + (f"  target <= {limit:.0f} MB: {met(mb <= limit)}" if limit else "")
            )
        errs = t.get("eprd_log_errors", {})
        if errs.get("count"):
            out.append(f"  eprd logged {errs['count']} error lines, e.g. {errs['samples'][:2]}")
    s = results.get("startup")
    if s:
        out.append(
            "\nStart-up (time from process start, median of the runs; cold = fresh -cache-dir, "
            "warm = same -cache-dir; every file read once before, so the OS page cache holds them)"
        )
        rows = []
        for total, sec in s.items():
            n = int(total)
            for phase in ("cold", "warm", "warm_nowatch"):
                run = sec.get(phase, {})
                if not run:
                    continue
                target = target_for(TARGETS.get(f"{phase}_s", {}), n)
                rss = run.get("rss_after_load_kb") or run.get("rss_at_ready_kb") or {}
                rows.append(
                    [
                        f"{n:,}",
                        phase,
                        fmt(run.get("ready_s"), 2)
                        + (
                            f" ({' / '.join(fmt(t, 2) for t in run['ready_s_runs'])})"
                            if run.get("ready_s_runs")
                            else ""
                        ),
                        fmt(run.get("search_s"), 2),
                        fmt(run.get("packages_loaded_s"), 2),
                        f"{rss.get('VmRSS', 0) / 1024:.0f} MB"
                        + (" (after load)" if "rss_after_load_kb" in run else " (at ready)"),
                        fmt(run.get("stop_s"), 1),
                        (f"<= {target:.0f} s: {met(_le(run.get('ready_s'), target))}" if target else "-"),
                    ]
                )
        out.append(
            table(
                rows,
                [
                    "versions",
                    "start",
                    "ready s (runs)",
                    "/search s",
                    "load logged s",
                    "RSS",
                    "SIGTERM->exit s",
                    "target (issue 4)",
                ],
            )
        )
        out.append(
            "  warm_nowatch = warm with -package-paths-enable-watcher=false; "
            "ready s - load logged s = interpreter, imports, listener and watcher set-up"
        )
        out.append("\nRebuild after one manifest edit (the 'snapshot swapped' log line; watcher on)")
        rows = []
        for total, sec in s.items():
            r = sec.get("rebuild", {})
            rows.append(
                [
                    f"{int(total):,}",
                    r.get("mode", "-"),
                    fmt(r.get("rebuild_median_s"), 3),
                    fmt(r.get("rebuild_max_s"), 3),
                    fmt(r.get("visible_median_s"), 3),
                    fmt(r.get("swaps_per_edit"), 1),
                    fmt(r.get("folders")),
                    fmt(r.get("inotify_watches")),
                    coverage_text(r.get("coverage")),
                    r.get("error") or (r.get("watcher_error") or "")[:60],
                ]
            )
            inotify = r.get("inotify")
            if inotify:
                rows.append(
                    [
                        "",
                        "(inotify)",
                        fmt(inotify.get("rebuild_median_s"), 3),
                        fmt(inotify.get("rebuild_max_s"), 3),
                        fmt(inotify.get("visible_median_s"), 3),
                        fmt(inotify.get("swaps_per_edit"), 1),
                        fmt(inotify.get("folders")),
                        fmt(inotify.get("inotify_watches")),
                        coverage_text(inotify.get("coverage")),
                        inotify.get("error") or (inotify.get("watcher_error") or "")[:60],
                    ]
                )
        out.append(
            table(
                rows,
                [
                    "versions",
                    "watcher",
                    "rebuild median s",
                    "rebuild max s",
                    "visible median s",
                    "swaps/edit",
                    "folders",
                    "inotify watches",
                    "edits seen",
                    "note",
                ],
            )
        )
        rebuilds = {int(k): v["rebuild"].get("rebuild_median_s") for k, v in s.items() if v.get("rebuild")}
        sizes = sorted(k for k, v in rebuilds.items() if v)
        if len(sizes) >= 2:
            small, large = sizes[0], sizes[-1]
            out.append(
                f"  rebuild {large:,} / {small:,} versions: {rebuilds[large] / rebuilds[small]:.1f}x "
                f"(1.0x: independent of the collection's size; {large / small:.1f}x: proportional to it)"
            )
    lv = results.get("live")
    if lv:
        out.append(
            f"\nLive reload on {lv['versions']:,} versions under load ({lv['load']}); "
            "time from the start of the edit until the HTTP API shows it"
        )
        rows = []
        for kind, k in (lv.get("by_kind") or {}).items():
            rows.append([kind, str(k["n"]), fmt(k["median_s"], 3), fmt(k["worst_s"], 3)])
        if rows:
            out.append(table(rows, ["edit", "n", "median s", "worst s"]))
        load = lv.get("load_result") or {}
        if "median_s" in lv:
            out.append(
                f"  all edits: median {fmt(lv['median_s'], 3)} s (target <= {TARGETS['live_median_s']} s: "
                f"{met(_le(lv['median_s'], TARGETS['live_median_s']))}), worst "
                f"{fmt(lv['worst_s'], 3)} s (target <= {TARGETS['live_worst_s']} s: "
                f"{met(_le(lv['worst_s'], TARGETS['live_worst_s']) and not lv['not_visible'])}), "
                f"not visible: {lv['not_visible']}"
            )
        if load:
            errors = f"errors {load['errors_total']} {load['errors']}"
            out.append(
                f"  load: {load['requests']:,} requests, {load['rps']:,.0f} req/s, "
                f"p99 {load['p99_ms']:.1f} ms, "
                f"{errors} (target 0: {met(load['errors_total'] == 0)}); "
                f"poller reconnects {lv.get('poll_errors', 0)}"
            )
        errs = lv.get("eprd_log_errors", {})
        if errs.get("count"):
            out.append(
                f"  eprd logged {errs['count']} error lines during the edits, e.g. {errs['samples'][:2]}"
            )
    checks = results.get("assessment") or []
    if checks:
        out.append("\nTargets of issues 3 and 4 (measured on this machine in this run)")
        rows = [[c["target"], str(c["measured"]), c["wanted"], met(c["met"])] for c in checks]
        out.append(table(rows, ["target", "measured", "wanted", ""]))
        out.append(f"  {sum(c['met'] for c in checks)} of {len(checks)} met")
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------------


def check_tools() -> None:
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"{sys.argv[0]} needs {' and '.join(missing)} on PATH.\n"
            "On Debian/Ubuntu: apt-get install -y nginx-light wrk"
        )
    try:
        subprocess.run([sys.executable, "-c", "import eprd"], check=True, cwd=str(ROOT), capture_output=True)
    except subprocess.CalledProcessError:
        sys.exit(
            f"eprd is not importable by {sys.executable}; run with the project's venv "
            "(.venv/bin/python benchmarks/run.py) after `.venv/bin/pip install -e .`"
        )


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=str(ROOT), capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "eprd_commit": git("rev-parse", "--short", "HEAD"),
        "eprd_dirty": bool(git("status", "--porcelain", "--", "eprd")),
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "wrk": (
            subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines() or [""]
        )[0],
        "inotify_max_user_watches": _read_int("/proc/sys/fs/inotify/max_user_watches"),
    }


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="eprd benchmarks: eprd vs nginx, start-up, live reload.")
    parser.add_argument(
        "--quick", action="store_true", help="small collections and 3 s runs: a smoke test of ~2 minutes"
    )
    parser.add_argument(
        "--versions",
        help="collection sizes, comma-separated (default 2000,10000; quick 200,600); "
        "throughput runs on the first",
    )
    parser.add_argument(
        "--live-versions", type=int, help="size of the live-reload copy (default 300; quick 100)"
    )
    parser.add_argument("--only", default="throughput,startup,live", help="phases to run (default: all)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10; quick 3)")
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up before each wrk run (default 2; quick 1)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measured wrk runs per endpoint and server, alternating (median)",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, help="rounds of the six live edits (default 3; quick 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--zips", type=float, default=0.1, help="fraction of versions generated as zip files")
    parser.add_argument(
        "--start-timeout", type=float, default=1800.0, help="seconds to wait for eprd to be ready"
    )
    parser.add_argument(
        "--start-repeat", type=int, help="cold and warm starts per collection (median; default 3, quick 1)"
    )
    parser.add_argument("--output", default=str(OUT / "results.json"))
    opts = parser.parse_args(argv)
    quick = opts.quick
    opts.sizes = [int(v) for v in (opts.versions or ("200,600" if quick else "2000,10000")).split(",") if v]
    opts.live_versions = opts.live_versions or (100 if quick else 300)
    opts.start_repeat = opts.start_repeat or (1 if quick else 3)
    opts.duration = opts.duration or (3.0 if quick else 10.0)
    opts.warmup = opts.warmup if opts.warmup is not None else (1.0 if quick else 2.0)
    opts.rounds = opts.rounds or (1 if quick else 3)
    opts.load_seconds = 2.0 if quick else 4.0
    opts.rebuild_edits = 2 if quick else 3
    opts.visible_timeout = 30.0
    opts.coverage = 4 if quick else 6  # packages spread over the collection that get one edit each
    opts.coverage_timeout = 5.0
    opts.settle = 1.2  # seconds between live edits: longer than the watcher's debounce
    opts.phases = {p.strip() for p in opts.only.split(",") if p.strip()}
    unknown = opts.phases - {"throughput", "startup", "live"}
    if unknown:
        parser.error(f"unknown phase(s) in --only: {', '.join(sorted(unknown))}")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    check_tools()
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    # Also when started in the background by a shell that ignores SIGINT for its jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    WORK.mkdir(parents=True, exist_ok=True)
    for stale in ("report.lua",):
        with contextlib.suppress(FileNotFoundError):
            (WORK / stale).unlink()
    results: dict[str, Any] = {
        "machine": machine(),
        "options": {k: v for k, v in vars(opts).items() if k != "phases"} | {"phases": sorted(opts.phases)},
        "targets": {k: v for k, v in TARGETS.items()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    load1 = results["machine"]["loadavg_at_start"][0]
    if load1 > 0.5:
        log(f"warning: load average {load1:.2f} at start; other processes will distort the numbers")
    started = time.monotonic()
    status = 0
    try:
        collections = [collection(total, opts.seed, opts.zips) for total in opts.sizes]
        if "throughput" in opts.phases:
            throughput(collections[0], opts, results)
        if "startup" in opts.phases:
            for meta in collections:
                startup(meta, opts, results)
        if "live" in opts.phases:
            live(collection(opts.live_versions, opts.seed + 1, max(opts.zips, 0.1)), opts, results)
    except KeyboardInterrupt:
        log("interrupted; stopping every process started")
        results["interrupted"] = True
        status = 130
    except Exception as err:
        log(f"error: {err!r}")
        results["error"] = repr(err)
        status = 1
        raise
    finally:
        PROCS.stop_all()
        results["seconds"] = round(time.monotonic() - started, 1)
        results["machine"]["loadavg_at_end"] = os.getloadavg()
        results["assessment"] = assess(results)
        write_results(results, opts.output, report)
    return status


def write_results(results: dict[str, Any], output: str, report: Callable[[dict[str, Any]], str]) -> None:
    """Write the JSON, then print the report (as much as a partial run allows) and a closing line."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(results, indent=2, default=str) + "\n")
    try:
        print(report(results))
    except Exception as err:  # a partial run: the JSON has everything measured
        print(f"(no complete report: {err!r})")
    load = results["machine"]["loadavg_at_end"]
    print(f"\n{results['seconds']} s (load average at the end {load[0]:.2f}, {load[1]:.2f}); JSON: {output}")


if __name__ == "__main__":
    sys.exit(main())
