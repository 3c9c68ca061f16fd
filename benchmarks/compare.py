#!/usr/bin/env python3
"""A/B benchmark: two commits of eprd, measured alternately in the same run.

    .venv/bin/python benchmarks/compare.py [--base REF] [--head REF] [--quick] [--versions 2000] [--repeat 3]

``--base`` defaults to 4fdc0d4 (the last commit before the issue-11 refactor), ``--head`` to the
working tree as it is (uncommitted changes under eprd/ included; the report lists them). Each REF
is checked out with ``git worktree add --detach benchmarks/out/ab/<sha>`` (reused when present)
and run with this same interpreter and ``PYTHONPATH=<worktree>``, from the worktree: before
anything is measured, ``python -c 'import eprd'`` in exactly that environment must name the
worktree's ``eprd/__init__.py`` (not the editable install of this checkout), and ``python -m eprd
-h`` must list every flag the run passes; otherwise the run stops.

On the synthetic collection of benchmarks/run.py (``--versions``, 2,000 by default; generated and
cached the same way) it measures, base and head alternately (A B A B ..., ``--repeat`` rounds;
the median of the rounds is reported, the single runs are listed beside it):

* start-up: ``cold`` (a fresh ``-cache-dir``) and ``warm`` (the same ``-cache-dir`` again, so the
  index cache of the cold start is read): seconds from starting the process until
  ``/health?ready=true`` answers 200. One untimed start per side comes first (it compiles the
  bytecode and fills the page cache), and every file of the collection is read once before.
* throughput: one eprd per side, both running, wrk (``--threads``, ``--connections``, keep-alive,
  ``--warmup`` s then ``--duration`` s per run) on ``/search``, the filtered ``/search``,
  ``/categories``, the largest ``/package/{n}/{v}/`` document and the ~6 MB zip download:
  requests/s, p50 and p99 latency, MB/s for the download; wrk errors are counted.
* RSS: ``VmRSS`` (and the peak ``VmHWM``) of each eprd process after all its load.
* identity: each endpoint's status, Content-Type and body from base and head, byte for byte.

How to read it: the ``head/base`` column is head divided by base. For requests/s and MB/s above
1.00 means head is faster; for seconds, milliseconds and MB below 1.00 is better (the ``better``
column says which way). Both sides share the machine and the conditions of the run, so the ratio
is what to look at, not the absolute numbers; when the runs of one side spread as wide as the
difference between the sides (see the ``runs`` column), the difference is noise. ``--base X
--head X`` (the same commit twice) shows how far apart two identical sides land on this machine.

Tables go to stdout, progress to stderr, everything (per-run numbers, both commits, load
average at start and end) to benchmarks/out/compare.json. Every process is stopped at the end, on
errors and on Ctrl-C. Needs wrk (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench

DEFAULT_BASE = "4fdc0d4"  # parent of ed37ba5, where the issue-11 refactor starts
AB = bench.OUT / "ab"  # worktrees, one per commit
WORK = bench.WORK / "ab"  # cache dirs of this run
# Every flag benchmarks/run.py's Eprd passes (checked against each side's -h before the run).
FLAGS = (
    "address",
    "config",
    "require-package-signatures",
    "log-level",
    "log-type",
    "cache-dir",
    "shutdown-timeout",
)
SIDES = ("base", "head")


@dataclass
class Side:
    """One of the two eprd versions: where its code is and how to start it."""

    name: str  # "base" or "head"
    ref: str  # as given; "(working tree)" for the default head
    sha: str
    subject: str
    checkout: Path
    dirty: list[str] = field(default_factory=list)  # uncommitted files under eprd/ (working tree only)
    eprd_file: str = ""
    log_level: str = "warn"  # -log-level; info measures the access log too

    @property
    def label(self) -> str:
        return self.sha[:7] + ("+dirty" if self.dirty else "")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EPR_")}
        env["PYTHONPATH"] = str(self.checkout)
        env.pop("PYTHONHOME", None)
        return env

    def eprd(self, meta: dict[str, Any], cache_dir: Path, name: str) -> bench.Eprd:
        return bench.Eprd(
            meta["config"],
            cache_dir,
            f"ab-{self.name}-{name}",
            log_level=self.log_level,
            cwd=self.checkout,
            env=self.env(),
            revision=self.label,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "sha": self.sha,
            "subject": self.subject,
            "checkout": str(self.checkout),
            "eprd_file": self.eprd_file,
            "uncommitted_eprd_files": self.dirty,
        }


# --- the two checkouts ----------------------------------------------------------------------------


def git(*args: str, cwd: Path = bench.ROOT, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True)
    if check and proc.returncode:
        raise SystemExit(f"git {' '.join(args)} failed in {cwd}:\n{proc.stderr.strip()}")
    return proc.stdout.strip()


def registered_worktrees() -> set[str]:
    out = git("worktree", "list", "--porcelain")
    return {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")}


def worktree(name: str, ref: str) -> Side:
    """The side for ``ref``: a detached worktree at benchmarks/out/ab/<sha>, added unless present."""
    sha = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not sha:
        raise SystemExit(f"--{name} {ref}: not a commit in {bench.ROOT}")
    path = AB / sha
    if path.exists():
        at = git("rev-parse", "HEAD", cwd=path, check=False)
        if str(path) not in registered_worktrees() or at != sha:
            raise SystemExit(
                f"{path} exists but is not a worktree at {sha[:7]} (HEAD {at[:7] or '?'}); "
                f"remove it (git worktree remove --force {path}) and run again"
            )
        changed = git("status", "--porcelain", "--untracked-files=no", cwd=path)
        if changed:
            raise SystemExit(f"the worktree {path} has local changes:\n{changed}\nremove it and run again")
        bench.log(f"{name}: reusing the worktree {path}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        # -f: a worktree of this path that was deleted without `git worktree remove` is still registered.
        force = ["-f"] if str(path) in registered_worktrees() else []
        bench.log(f"{name}: git worktree add --detach {path} {sha[:7]}")
        git("worktree", "add", *force, "--detach", str(path), sha)
    return Side(name, ref, sha, git("log", "-1", "--format=%s", sha), path)


def working_tree() -> Side:
    """The default head: this checkout as it is, uncommitted changes under eprd/ included."""
    sha = git("rev-parse", "HEAD")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "eprd"], cwd=str(bench.ROOT), capture_output=True, text=True
    ).stdout  # (not stripped: the first line's status column may start with a space)
    dirty = [line[3:] for line in status.splitlines() if line.strip()]
    side = Side("head", "(working tree)", sha, git("log", "-1", "--format=%s", sha), bench.ROOT, dirty)
    if dirty:
        bench.log(f"head: the working tree has {len(dirty)} uncommitted file(s) under eprd/: {dirty[:5]}")
    return side


def verify(side: Side) -> None:
    """Stop the run unless ``side``'s environment imports its own eprd and accepts every flag we pass."""
    expected = (side.checkout / "eprd" / "__init__.py").resolve()
    proc = subprocess.run(
        [sys.executable, "-c", "import eprd; print(eprd.__file__)"],
        cwd=str(side.checkout),
        env=side.env(),
        capture_output=True,
        text=True,
    )
    found = proc.stdout.strip()
    if proc.returncode or not found or Path(found).resolve() != expected:
        raise SystemExit(
            f"{side.name} ({side.label}): PYTHONPATH={side.checkout} imports eprd from "
            f"{found or '(nothing)'}, not {expected}\n{proc.stderr.strip()}"
        )
    side.eprd_file = found
    bench.log(f"{side.name} {side.label}: eprd.__file__ = {found}")
    usage = subprocess.run(
        [sys.executable, "-m", "eprd", "-h"],
        cwd=str(side.checkout),
        env=side.env(),
        capture_output=True,
        text=True,
    )
    known = set(re.findall(r"^\s+-([A-Za-z0-9-]+)", usage.stdout + usage.stderr, re.M))
    missing = [flag for flag in FLAGS if flag not in known]
    if missing:
        raise SystemExit(
            f"{side.name} ({side.label}) does not accept -{', -'.join(missing)} "
            f"(python -m eprd -h in {side.checkout})"
        )
    # Bytecode now, so that no timed start compiles it.
    compileall.compile_dir(str(side.checkout / "eprd"), quiet=1)


# --- measurements ---------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def startup(sides: list[Side], meta: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """Cold and warm starts, base and head alternately: seconds until /health?ready=true is 200."""
    bench.log("startup: reading every file of the collection once (page cache)")
    out: dict[str, Any] = {"page_cache_fill_s": bench.fill_page_cache(Path(meta["config"]).parent)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        phase: {s.name: [] for s in sides} for phase in ("cold", "warm")
    }
    for side in sides:  # untimed: bytecode, page cache of the interpreter and the libraries
        cache = WORK / f"prime-{side.name}"
        shutil.rmtree(cache, ignore_errors=True)
        bench.log(f"startup: untimed first start of {side.name}")
        eprd = side.eprd(meta, cache, "prime")
        try:
            out[f"prime_{side.name}"] = eprd.wait_started(opts.start_timeout)
        finally:
            eprd.stop()
    for round_no in range(opts.repeat):
        for phase in ("cold", "warm"):
            for side in sides:
                cache = WORK / f"cache-{side.name}"
                if phase == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                eprd = side.eprd(meta, cache, f"{phase}-{round_no}")
                try:
                    started = eprd.wait_started(opts.start_timeout)
                finally:
                    stop_s = eprd.stop()  # a warm start reads what this stop wrote
                run = {**started, "stop_s": stop_s, "round": round_no}
                runs[phase][side.name].append(run)
                bench.log(
                    f"startup round {round_no + 1}/{opts.repeat} {phase} {side.name}: "
                    f"ready {run['ready_s']} s"
                )
    for phase, by_side in runs.items():
        out[phase] = {
            name: {"ready_s": median([r["ready_s"] for r in rs]), "runs": rs} for name, rs in by_side.items()
        }
    return out


def endpoints(meta: dict[str, Any]) -> list[tuple[str, str]]:
    big, version = meta["big"]["name"], meta["big"]["version"]
    return [
        ("search", "/search"),
        ("search_filtered", bench.FILTERED_SEARCH),
        ("categories", "/categories"),
        ("package", f"/package/{big}/{version}/"),
        ("download", f"/epr/{big}/{big}-{version}.zip"),
    ]


def fetch(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    client = bench.Client(port, timeout=120)
    try:
        return client.get(path)
    finally:
        client.close()


def identity(servers: dict[str, bench.Eprd], paths: list[tuple[str, str]]) -> dict[str, Any]:
    """Status, Content-Type and body of every endpoint from base and head, compared byte for byte."""
    out: dict[str, Any] = {}
    for key, path in paths:
        got = {name: fetch(eprd.port, path) for name, eprd in servers.items()}
        row: dict[str, Any] = {"path": path}
        for name, (status, hdrs, body) in got.items():
            row[name] = {
                "status": status,
                "content_type": hdrs.get("content-type"),
                "content_encoding": hdrs.get("content-encoding"),
                "bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        (sa, ha, a), (sb, hb, b) = got["base"], got["head"]
        row["same_body"] = a == b
        row["same_status"] = sa == sb
        row["same_content_type"] = ha.get("content-type") == hb.get("content-type")
        row["identical"] = row["same_body"] and row["same_status"] and row["same_content_type"]
        if a != b:
            at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            row["first_difference"] = {
                "offset": at,
                "base": a[max(0, at - 40) : at + 80].decode(errors="replace"),
                "head": b[max(0, at - 40) : at + 80].decode(errors="replace"),
            }
        out[key] = row
        if not row["identical"]:
            bench.log(f"  {key}: base and head DIFFER ({path})")
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each number over the rounds (each one on its own), and the single runs."""
    return {
        "rps": median([r["rps"] for r in runs]),
        "mb_s": median([r["mb_s"] for r in runs]),
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "errors_total": sum(r["errors_total"] for r in runs),
        "runs": runs,
    }


def throughput(sides: list[Side], meta: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """Both servers up; per endpoint wrk on base, then head, ``--repeat`` times; RSS afterwards."""
    servers: dict[str, bench.Eprd] = {}
    out: dict[str, Any] = {"endpoints": {}}
    try:
        for side in sides:
            cache = WORK / f"throughput-{side.name}"
            shutil.rmtree(cache, ignore_errors=True)
            bench.log(f"throughput: starting {side.name} ({side.label})")
            servers[side.name] = side.eprd(meta, cache, "throughput")
            out[f"start_{side.name}"] = servers[side.name].wait_started(opts.start_timeout)
        paths = endpoints(meta)
        bench.log("throughput: comparing the bodies of base and head")
        out["identity"] = identity(servers, paths)
        for key, path in paths:
            if any(out["identity"][key][s]["status"] != 200 for s in SIDES):
                bench.log(f"  {key}: not 200 on both sides, not measured")
                continue
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
            loadavg_before = os.getloadavg()
            for round_no in range(opts.repeat):
                for name in SIDES:
                    url = servers[name].base + path
                    if opts.warmup:
                        bench.run_wrk(url, opts.warmup, opts.connections, opts.threads)
                    result = bench.run_wrk(url, opts.duration, opts.connections, opts.threads)
                    runs[name].append(result)
                    bench.log(
                        f"  wrk {key} round {round_no + 1}/{opts.repeat} {name}: {result['rps']:,.0f} req/s, "
                        f"{result['mb_s']:,.1f} MB/s, p99 {result['p99_ms']:.1f} ms"
                        + (f", {result['errors_total']} errors" if result["errors_total"] else "")
                    )
                    if not servers[name].alive():
                        raise RuntimeError(f"{name} died during {key}; see {servers[name].log_path}")
            out["endpoints"][key] = {
                "path": path,
                "loadavg_before": loadavg_before,
                **{name: summarize(rs) for name, rs in runs.items()},
            }
        out["rss_after_load_kb"] = {name: bench.rss_kb(eprd.proc.pid) for name, eprd in servers.items()}
        out["log_errors"] = {name: bench.count_errors(eprd.log_records()) for name, eprd in servers.items()}
    finally:
        for name, eprd in servers.items():
            out[f"stop_{name}_s"] = eprd.stop()
    return out


# --- report ---------------------------------------------------------------------------------------


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per number: base, head, head/base, which way is better, the single runs."""
    out: list[dict[str, Any]] = []

    def add(metric: str, better: str, base: float | None, head: float | None, runs: Any = None) -> None:
        ratio = round(head / base, 3) if base and head is not None else None
        out.append(
            {"metric": metric, "better": better, "base": base, "head": head, "ratio": ratio, "runs": runs}
        )

    s = results.get("startup") or {}
    for phase in ("cold", "warm"):
        if phase in s:
            b, h = s[phase]["base"], s[phase]["head"]
            add(
                f"start {phase} s",
                "lower",
                b["ready_s"],
                h["ready_s"],
                ([r["ready_s"] for r in b["runs"]], [r["ready_s"] for r in h["runs"]]),
            )
    t = results.get("throughput") or {}
    for key, row in (t.get("endpoints") or {}).items():
        b, h = row["base"], row["head"]
        main = "mb_s" if key == "download" else "rps"
        unit = "MB/s" if key == "download" else "req/s"
        add(
            f"{key} {unit}",
            "higher",
            b[main],
            h[main],
            ([r[main] for r in b["runs"]], [r[main] for r in h["runs"]]),
        )
        for stat in ("p50_ms", "p99_ms"):
            add(
                f"{key} {stat.replace('_ms', '')} ms",
                "lower",
                b[stat],
                h[stat],
                ([r[stat] for r in b["runs"]], [r[stat] for r in h["runs"]]),
            )
    rss = t.get("rss_after_load_kb") or {}
    if rss:
        mb = {name: {k: v / 1024 for k, v in values.items()} for name, values in rss.items()}
        add("RSS after load MB", "lower", mb["base"].get("VmRSS"), mb["head"].get("VmRSS"))
        add("peak RSS MB", "lower", mb["base"].get("VmHWM"), mb["head"].get("VmHWM"))
        if mb["base"].get("children_rss") or mb["head"].get("children_rss"):
            add(
                "child processes RSS MB",
                "lower",
                mb["base"].get("children_rss"),
                mb["head"].get("children_rss"),
            )
    return out


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def side_text(side: dict[str, Any]) -> str:
    """``4fdc0d4 (ref 4fdc0d4): subject``, with the uncommitted eprd/ files of a working tree."""
    sha = side.get("sha", "?")[:7]
    ref = side.get("ref", "")
    where = "working tree" if ref == "(working tree)" else f"ref {ref}"
    dirty = side.get("uncommitted_eprd_files") or []
    if dirty:
        sha += "+dirty"
        where += f", {len(dirty)} uncommitted eprd/ file(s): {', '.join(dirty[:4])}" + (
            ", ..." if len(dirty) > 4 else ""
        )
    subject = side.get("subject", "")
    if len(subject) > 90:
        subject = subject[:87] + "..."
    return f"{sha} ({where}): {subject}"


def report(results: dict[str, Any]) -> str:
    opts = results["options"]
    base, head = results.get("base") or {}, results.get("head") or {}
    out = [
        f"\neprd A/B on {opts['versions']:,} versions, head/base",
        f"  base {side_text(base)}",
        f"  head {side_text(head)}",
        f"  {opts['repeat']} round(s), base and head alternately, medians"
        + (
            f"; wrk {opts['threads']} threads, {opts['connections']} connections, "
            f"{opts['warmup']} s warm-up + {opts['duration']} s per run"
            if "throughput" in opts["phases"]
            else ""
        ),
    ]
    m = results["machine"]
    end = m.get("loadavg_at_end")
    out.append(
        f"  {m['cpus']} CPUs; load average at start {m['loadavg_at_start'][0]:.2f}"
        + (f", at end {end[0]:.2f}" if end else "")
    )
    table_rows = []
    for row in results.get("rows") or []:
        runs = row["runs"]
        table_rows.append(
            [
                row["metric"],
                number(row["base"]),
                number(row["head"]),
                f"{row['ratio']:.3f}" if row["ratio"] is not None else "-",
                row["better"],
                " ".join(number(v) for v in runs[0]) + " | " + " ".join(number(v) for v in runs[1])
                if runs
                else "",
            ]
        )
    if table_rows:
        out.append(
            bench.table(table_rows, ["metric", "base", "head", "head/base", "better", "runs base | head"])
        )
    t = results.get("throughput") or {}
    errors = {
        key: (row["base"]["errors_total"], row["head"]["errors_total"])
        for key, row in (t.get("endpoints") or {}).items()
        if row["base"]["errors_total"] or row["head"]["errors_total"]
    }
    if errors:
        out.append("  wrk errors (base, head): " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    for name, errs in (t.get("log_errors") or {}).items():
        if errs.get("count"):
            out.append(f"  {name} logged {errs['count']} error lines, e.g. {errs['samples'][:2]}")
    ident = t.get("identity")
    if ident:
        out.append("\nResponses of base and head")
        id_rows = []
        for key, row in ident.items():
            b, h = row["base"], row["head"]
            what = "identical"
            if not row["identical"]:
                parts = [
                    name
                    for name, same in (
                        ("status", row["same_status"]),
                        ("Content-Type", row["same_content_type"]),
                        ("body", row["same_body"]),
                    )
                    if not same
                ]
                what = "DIFFERENT " + ", ".join(parts)
                if "first_difference" in row:
                    what += f" (first at byte {row['first_difference']['offset']:,})"
            id_rows.append([key, f"{b['status']}/{h['status']}", f"{b['bytes']:,}", f"{h['bytes']:,}", what])
        out.append(bench.table(id_rows, ["endpoint", "status", "base bytes", "head bytes", ""]))
        same = sum(1 for row in ident.values() if row["identical"])
        out.append(f"  {same} of {len(ident)} identical")
    return "\n".join(out)


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="eprd A/B: two commits, alternately, in one run.")
    parser.add_argument(
        "--base", default=DEFAULT_BASE, help=f"commit to compare against (default {DEFAULT_BASE})"
    )
    parser.add_argument("--head", help="commit to measure (default: the working tree as it is)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 200 versions, 2 s wrk runs, 2 rounds"
    )
    parser.add_argument("--versions", type=int, help="collection size (default 2000; quick 200)")
    parser.add_argument("--repeat", type=int, help="rounds of base, head (default 3; quick 2); medians")
    parser.add_argument("--duration", type=float, help="seconds per measured wrk run (default 10; quick 2)")
    parser.add_argument(
        "--warmup", type=float, help="seconds of wrk before each measured run (default 2; quick 1)"
    )
    parser.add_argument("--only", default="startup,throughput", help="phases (default startup,throughput)")
    parser.add_argument(
        "--log-level", default="warn", help="eprd's -log-level (default warn; info: with the access log)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seed", type=int, default=1, help="collection seed (run.py's default: same collection)"
    )
    parser.add_argument("--zips", type=float, default=0.1, help="fraction of versions as zip files")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for ready")
    parser.add_argument("--output", default=str(bench.OUT / "compare.json"))
    opts = parser.parse_args(argv)
    opts.versions = opts.versions or (200 if opts.quick else 2000)
    opts.repeat = opts.repeat or (2 if opts.quick else 3)
    opts.duration = opts.duration or (2.0 if opts.quick else 10.0)
    opts.warmup = opts.warmup if opts.warmup is not None else (1.0 if opts.quick else 2.0)
    opts.phases = {p.strip() for p in opts.only.split(",") if p.strip()}
    if opts.phases - {"startup", "throughput"}:
        parser.error(
            f"unknown phase(s) in --only: {', '.join(sorted(opts.phases - {'startup', 'throughput'}))}"
        )
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/compare.py needs wrk on PATH (Debian/Ubuntu: apt-get install -y wrk)")
    signal.signal(signal.SIGTERM, bench._on_sigterm)
    signal.signal(signal.SIGHUP, bench._on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    WORK.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "interpreter": sys.executable,
        },
        "options": {k: v for k, v in vars(opts).items() if k != "phases"} | {"phases": sorted(opts.phases)},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    load1 = results["machine"]["loadavg_at_start"][0]
    if load1 > 0.5:
        bench.log(f"warning: load average {load1:.2f} at start; other processes will distort the numbers")
    # Before anything runs (and before compare.json is written): a wrong ref or environment stops here.
    sides = [worktree("base", opts.base), worktree("head", opts.head) if opts.head else working_tree()]
    for side in sides:
        side.log_level = opts.log_level
        verify(side)
        results[side.name] = side.describe()
    started = time.monotonic()
    status = 0
    try:
        meta = bench.collection(opts.versions, opts.seed, opts.zips)
        results["collection"] = {
            k: meta[k] for k in ("folder", "versions_total", "files_total", "bytes_total")
        }
        if "startup" in opts.phases:
            results["startup"] = startup(sides, meta, opts)
        if "throughput" in opts.phases:
            results["throughput"] = throughput(sides, meta, opts)
    except KeyboardInterrupt:
        bench.log("interrupted; stopping every process started")
        results["interrupted"] = True
        status = 130
    except Exception as err:
        bench.log(f"error: {err!r}")
        results["error"] = repr(err)
        status = 1
        raise
    finally:
        bench.PROCS.stop_all()
        results["seconds"] = round(time.monotonic() - started, 1)
        results["machine"]["loadavg_at_end"] = os.getloadavg()
        try:
            results["rows"] = rows(results)
        except Exception as err:  # a partial run: the JSON still has every run measured
            results["rows_error"] = repr(err)
        bench.write_results(results, opts.output, report)
    return status


if __name__ == "__main__":
    sys.exit(main())
