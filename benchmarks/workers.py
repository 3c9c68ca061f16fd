"""Benchmark of issue 16: cold starts, a baked index after a copy, ``-workers 1``/``2`` vs nginx, RSS.

    apt-get install -y nginx-light wrk
    .venv/bin/python benchmarks/workers.py            # ~9 min on 2 cores (+2 min to generate the collections)
    .venv/bin/python benchmarks/workers.py --quick    # 200 versions, 2 s runs

Phases (``--only cold,baked,throughput,rss``):

* ``cold``: cold starts (a fresh ``-cache-dir``) on 2,000 and 10,000 versions (``--cold-versions``),
  every file read once before so that the OS page cache holds the collection, three starts each
  (``--start-repeat``), the median reported: seconds until ``/health?ready=true``. Targets (issue
  16): <= 2 s on ~2,000 versions, <= 10 s on 10,000.

* ``baked``: ``eprd -dry-run -cache-dir DIR`` bakes the index of the collection; the collection is
  then archived with ``tar``, deleted and extracted again at the same paths (new inodes and change
  times, mtimes kept in whole seconds, as container image layers keep them) and written out to
  disk (``sync``, as a layer is before a container starts), and eprd is started with
  ``-cache-dir DIR``: seconds until ``/health?ready=true``, and how many versions came from
  the index (``packages.from_cache`` of the ``packages loaded`` line). Target (issue 16): <= 1 s.
* ``throughput``: eprd with ``-workers 1`` and ``-workers 2`` against nginx with 1 and 2 worker
  processes serving the same bytes (wrk, keep-alive): ``/search``, filtered ``/search``,
  ``/package``, ``/categories`` and a download. Targets with 2 workers: >= 0.5x nginx on the JSON
  endpoints, >= 0.33x on ``/categories``, >= 0.75x on downloads.
* ``rss``: the memory of eprd with ``-workers 1, 2, 4`` after loading (the sum of the RSS of the
  supervisor and its workers, and the sum of their PSS, which counts shared pages once).

The report ends with the share of busy CPU time the hypervisor took for other guests during the
run (``steal`` in ``/proc/stat``): on a shared virtual machine, runs with very different shares
are not comparable. Results are printed and written to ``benchmarks/out/workers.json``. Compare
numbers of one run; helpers of ``run.py`` (process groups, wrk, nginx, the generated collections)
are reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import (  # (run.py is a script next to this one)
    FILTERED_SEARCH,
    OUT,
    PROCS,
    ROOT,
    WORK,
    Client,
    Eprd,
    Nginx,
    check_tools,
    collection,
    fill_page_cache,
    fmt,
    log,
    run_wrk,
    table,
)

TARGETS = {"json": 0.5, "categories": 0.33, "download": 0.75}
COLD_TARGETS = {2000: 2.0, 10000: 10.0}  # seconds; the 1,920 real versions ~ 2,000 generated


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = int(stat_fields(int(entry.name))[1])
    found = [pid]
    for candidate in found:
        found += [child for child, parent in parents.items() if parent == candidate and child not in found]
    return found


def memory_kb(pid: int) -> dict[str, int]:
    """Sum of RSS and of PSS (shared pages divided among the sharers) over ``pid``'s process tree."""
    rss = pss = count = 0
    for member in descendants(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
            count += 1
        except OSError:
            pass
    return {"processes": count, "rss_kb": rss, "pss_kb": pss}


def cold(opts: argparse.Namespace, results: dict[str, Any]) -> None:
    section: dict[str, Any] = {}
    results["cold"] = section
    for total in opts.cold_versions:
        meta = collection(total, 1, 0.1)
        log(f"cold {meta['versions_total']}: reading every file once (page cache)")
        fill_page_cache(Path(meta["config"]).parent)
        cache = WORK / f"cache-cold-{total}"
        runs = []
        for i in range(opts.start_repeat):
            shutil.rmtree(cache, ignore_errors=True)
            eprd = Eprd(
                meta["config"], cache, f"cold-{total}-{i}", extra=["-package-paths-enable-watcher=false"]
            )
            try:
                runs.append(eprd.wait_started(600)["ready_s"])
            finally:
                eprd.stop()
            log(f"  start {i + 1}: ready in {runs[-1]:.2f} s")
        section[str(meta["versions_total"])] = {
            "ready_s": statistics.median(runs),
            "runs": runs,
            "target_s": COLD_TARGETS.get(total),
        }


def baked(meta: dict[str, Any], results: dict[str, Any]) -> None:
    cache = WORK / "cache-baked"
    shutil.rmtree(cache, ignore_errors=True)
    started = time.monotonic()
    bake = subprocess.run(
        [sys.executable, "-m", "eprd", "-dry-run", "-config", meta["config"], "-cache-dir", str(cache),
         "-require-package-signatures=false", "-log-level", "warn"],
        cwd=str(ROOT), capture_output=True, text=True,
    )  # fmt: skip
    section: dict[str, Any] = {"bake_s": round(time.monotonic() - started, 3), "bake_exit": bake.returncode}
    results["baked"] = section
    folder = Path(meta["folder"])
    archive = WORK / "collection.tar"
    log(f"baked: index written in {section['bake_s']} s; tar, delete, extract {folder}")
    started = time.monotonic()
    subprocess.run(["tar", "-cf", str(archive), "-C", str(folder.parent), folder.name], check=True)
    shutil.rmtree(folder)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(folder.parent)], check=True)
    archive.unlink()
    # An image layer is written out before a container starts from it. Without this, the start
    # measured the disk writing back the extraction: ext4 makes a directory listing wait for
    # its block's write (1.2-2.8 s here right after extracting 489 MB, 0.75 s once written).
    os.sync()
    section["recopy_s"] = round(time.monotonic() - started, 3)
    eprd = Eprd(
        meta["config"], cache, "baked", log_level="info", extra=["-package-paths-enable-watcher=false"]
    )
    try:
        section["start"] = eprd.wait_started(120)
        loaded = [r for r in eprd.log_records() if r.get("message") == "packages loaded"]
        section["from_cache"] = loaded[0].get("packages.from_cache") if loaded else None
        section["served"] = loaded[0].get("packages.served") if loaded else None
    finally:
        eprd.stop()


def throughput(meta: dict[str, Any], opts: argparse.Namespace, results: dict[str, Any]) -> None:
    big, big_version = meta["big"]["name"], meta["big"]["version"]
    endpoints = [
        ("search", "/search", "json"),
        ("search_filtered", FILTERED_SEARCH, "json"),
        ("package", f"/package/{big}/{big_version}/", "json"),
        ("categories", "/categories", "categories"),
        ("download", f"/epr/{big}/{big}-{big_version}.zip", "download"),
    ]
    section: dict[str, Any] = {"endpoints": {}}
    results["throughput"] = section
    cache = WORK / "cache-workers"
    root = WORK / "nginx-root-workers"
    shutil.rmtree(root, ignore_errors=True)
    (root / "e").mkdir(parents=True)
    content_types: dict[str, str] = {}
    servers: dict[str, str] = {}
    procs: list[Any] = []
    try:
        for workers in (1, 2):
            eprd = Eprd(meta["config"], cache, f"workers{workers}", extra=["-workers", str(workers)])
            procs.append(eprd)
            eprd.wait_started(300)
            servers[f"eprd_w{workers}"] = eprd.base
        supervisor = procs[-1].proc.pid  # -workers 2: its two workers' CPU is read around each run
        client = Client(procs[0].port, timeout=120)
        for key, path, _ in endpoints:
            _, headers, body = client.get(path)
            (root / "e" / key).write_bytes(body)
            content_types[f"/e/{key}"] = headers.get("content-type", "application/octet-stream").split(";")[0]
        client.close()
        for workers in (1, 2):
            nginx = Nginx(root, content_types, workers=workers)
            procs.append(nginx)
            servers[f"nginx_w{workers}"] = nginx.base
        for key, path, kind in endpoints:
            row: dict[str, Any] = {"path": path, "kind": kind}
            for server, base in servers.items():
                url = base + (f"/e/{key}" if server.startswith("nginx") else path)
                log(f"  wrk {key} {server}")
                if opts.warmup:
                    run_wrk(url, opts.warmup, opts.connections, opts.threads)
                before = process_ticks(supervisor) if server == "eprd_w2" else {}
                row[server] = run_wrk(url, opts.duration, opts.connections, opts.threads)
                if before:
                    row["w2_split"] = cpu_split(before, process_ticks(supervisor))
            for workers in (1, 2):
                n = row[f"nginx_w{workers}"]["rps"]
                row[f"ratio_w{workers}"] = round(row[f"eprd_w{workers}"]["rps"] / n, 3) if n else None
            row["target_w2"] = TARGETS[kind]
            row["met"] = row["ratio_w2"] is not None and row["ratio_w2"] >= TARGETS[kind]
            section["endpoints"][key] = row
    finally:
        for proc in reversed(procs):
            proc.stop()


def rss(meta: dict[str, Any], results: dict[str, Any]) -> None:
    section: dict[str, Any] = {}
    results["rss"] = section
    cache = WORK / "cache-workers"
    for workers in (1, 2, 4):
        eprd = Eprd(meta["config"], cache, f"rss{workers}", extra=["-workers", str(workers)])
        try:
            eprd.wait_started(300)
            for path in ("/search", "/categories"):  # build the cached responses every worker keeps
                for _ in range(workers * 4):
                    Client(eprd.port).get(path)
            time.sleep(1)
            section[str(workers)] = memory_kb(eprd.proc.pid)
            log(f"  -workers {workers}: {section[str(workers)]}")
        finally:
            eprd.stop()


def interpreter() -> dict[str, Any]:
    """The Python that runs eprd here (``sys.executable``): how it was built moves every figure.

    (On the benchmark's machine, Debian's python3.11, built with PGO and LTO, loads in 12 % less
    CPU time than pyenv's default build of 3.11.7; see the README's Start-up section.)
    """
    return {
        "executable": sys.executable,
        "version": sys.version.split()[0],
        "configure": sysconfig.get_config_var("CONFIG_ARGS") or "",
    }


def machine_speed() -> dict[str, float]:
    """Two fixed workloads, so that figures from different machines can be set side by side.

    A cold start is CPU work, interpreted code and system calls, and the same code has started up to
    twice as slowly on one machine (or hour) as on another. Each figure: the fastest of three runs.
    """
    code = "d = {}\nfor i in range(2_000_000):\n    d[i & 1023] = str(i).partition('9')"
    loop = min(timeit.repeat(code, number=1, repeat=3))
    here = str(Path(__file__))
    calls = 100_000
    stat = min(timeit.repeat(lambda: os.stat(here), number=calls, repeat=3))
    return {"python_loop_s": round(loop, 3), "stat_us": round(stat / calls * 1e6, 2)}


def report(results: dict[str, Any]) -> str:
    out = []
    if "interpreter" in results:
        py = results["interpreter"]
        out.append(f"interpreter: {py['executable']} (Python {py['version']})")
    if "machine" in results:
        speed = results["machine"]
        out.append(
            f"machine: fixed Python loop {speed['python_loop_s']} s, os.stat {speed['stat_us']} us"
            " (lower is faster)"
        )
    if "cold" in results:
        rows = []
        for total, c in results["cold"].items():
            target = c.get("target_s")
            verdict = "" if target is None else ("met" if c["ready_s"] <= target else "NOT MET")
            runs = " ".join(fmt(r, 2) for r in c["runs"])
            rows.append([total, fmt(c["ready_s"], 2), runs, f"<= {target:g} s" if target else "", verdict])
        out.append(table(rows, ["cold start", "ready s (median)", "runs", "target", ""]))
    if "baked" in results:
        b = results["baked"]
        ready = b.get("start", {}).get("ready_s")
        verdict = "met" if ready is not None and ready <= 1 else "NOT MET"
        out.append(
            f"baked index after tar: ready in {fmt(ready, 3)} s, {b.get('from_cache')} of {b.get('served')} "
            f"versions from the index (target <= 1 s: {verdict})"
        )
    if "throughput" in results:
        rows = []
        for key, row in results["throughput"]["endpoints"].items():
            rows.append([
                key,
                *(fmt(row[s]["rps"], 0) for s in ("eprd_w1", "nginx_w1", "eprd_w2", "nginx_w2")),
                fmt(row["ratio_w1"], 2), fmt(row["ratio_w2"], 2),
                "/".join(f"{100 * share:.0f}" for share in row.get("w2_split", [])),
                f">= {row['target_w2']}", "met" if row["met"] else "NOT MET",
            ])  # fmt: skip
        header = [
            "endpoint", "eprd -w1", "nginx 1", "eprd -w2", "nginx 2", "x w1", "x w2",
            "w2 CPU %", "target w2", "",
        ]  # fmt: skip
        out.append(table(rows, header))
    if "rss" in results:
        rows = [[n, str(m["processes"]), fmt(m["rss_kb"] / 1024, 0), fmt(m["pss_kb"] / 1024, 0)]
                for n, m in results["rss"].items()]  # fmt: skip
        out.append(table(rows, ["-workers", "processes", "RSS sum MiB", "PSS sum MiB"]))
    if results.get("steal") is not None:
        # A virtual machine's cores can be taken by other guests: compare runs with similar shares.
        stolen = 100 * results["steal"]
        out.append(f"CPU time stolen by the hypervisor during the run: {stolen:.1f} % of busy time")
    return "\n\n".join(out)


def process_ticks(pid: int) -> dict[int, int]:
    """CPU time (user + system, in clock ticks) of every process below ``pid``, itself excluded."""
    ticks = {}
    for member in descendants(pid)[1:]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat_fields(member)
            ticks[member] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_split(before: dict[int, int], after: dict[int, int]) -> list[float]:
    """The shares of CPU time the two busiest children used between two readings (the workers of
    ``-workers 2``; the watch process uses next to none): [0.5, 0.5] is an even split, [1.0, 0.0]
    one worker serving everything."""
    used = sorted((after[pid] - before.get(pid, 0) for pid in after), reverse=True)[:2]
    total = sum(used)
    return [round(u / total, 2) for u in used] if total else []


def cpu_times() -> list[int]:
    """The machine's CPU time counters (``/proc/stat``: user, nice, system, idle, ..., steal); [] if none."""
    try:
        with open("/proc/stat") as fh:
            return [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return []


def steal_share(before: list[int], after: list[int]) -> float | None:
    """The share of CPU time the hypervisor gave to other guests between two ``cpu_times()``."""
    if len(before) < 8 or len(after) < 8:
        return None
    spent = [b - a for a, b in zip(before, after, strict=True)]
    busy = sum(spent) - spent[3]  # (idle time cannot be stolen from)
    return spent[7] / busy if busy > 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 versions, 2 s runs")
    parser.add_argument("--versions", type=int, help="collection size (default 2000; quick 200)")
    parser.add_argument("--only", default="cold,baked,throughput,rss")
    parser.add_argument("--cold-versions", help="collection sizes of the cold starts (default 2000,10000)")
    parser.add_argument("--start-repeat", type=int, default=3, help="cold starts per size (median)")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 5; quick 2)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=str(OUT / "workers.json"))
    opts = parser.parse_args(argv)
    opts.versions = opts.versions or (200 if opts.quick else 2000)
    opts.duration = opts.duration or (2.0 if opts.quick else 5.0)
    default_cold = "200,600" if opts.quick else "2000,10000"
    opts.cold_versions = [int(v) for v in (opts.cold_versions or default_cold).split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    phases = set(opts.only.split(","))
    if "throughput" in phases:
        check_tools()  # (before minutes of other phases, not a traceback when nginx is reached)
    results: dict[str, Any] = {
        "versions": opts.versions,
        "interpreter": interpreter(),
        "machine": machine_speed(),
    }
    started = cpu_times()
    try:
        meta = collection(opts.versions, 1, 0.1)
        results["versions_total"] = meta["versions_total"]
        if "cold" in phases:
            cold(opts, results)
        if "baked" in phases:
            baked(meta, results)
        if "throughput" in phases:
            throughput(meta, opts, results)
        if "rss" in phases:
            rss(meta, results)
    finally:
        PROCS.stop_all()
        results["steal"] = steal_share(started, cpu_times())
        Path(opts.output).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.output).write_text(json.dumps(results, indent=2))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
