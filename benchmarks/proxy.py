"""Proxy mode benchmark: /search through proxy mode against the same /search without it.

    .venv/bin/python benchmarks/proxy.py [--quick] [--versions 2000] [--duration 10] [--repeat 3]

Three eprd processes: an upstream registry (serving eprd's own testdata), a plain eprd on
a generated collection (benchmarks/generate.py, shared with run.py), and the same
collection in proxy mode towards the upstream. Reported:

* warm: wrk on /search and on a filtered /search against both; the proxy's upstream cache
  holds the upstream's answers (fresh for the upstream's max-age), so the ratio proxy/plain
  measures the merge at local speed (target >= 0.8x);
* cold: distinct queries nobody asked before, one at a time (every one an upstream call
  for the proxy, a response-cache miss for both): median and p90 latency and requests/s.

Needs wrk (``apt-get install -y wrk``). No pass/fail: the target is printed as met / NOT MET.
Results also go to benchmarks/out/proxy.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench

TARGET_RATIO = 0.8
QUERIES = ("/search", bench.FILTERED_SEARCH)


def get(base: str, path: str) -> tuple[int, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(base + path, timeout=60) as response:
        response.read()
        return response.status, time.perf_counter() - started


def start(config: str, cache: Path, name: str, extra: list[str] | None = None) -> bench.Eprd:
    eprd = bench.Eprd(config, cache, name, extra=extra)
    eprd.wait_started(600)
    return eprd


def warm(plain: bench.Eprd, proxy: bench.Eprd, opts: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for query in QUERIES:
        for server in (plain, proxy):
            assert get(server.base, query)[0] == 200  # fills the caches
            bench.run_wrk(server.base + query, opts.warmup, opts.connections, opts.threads)
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "proxy": []}
        for _ in range(opts.repeat):  # alternating, so that both see the same machine
            for label, server in (("plain", plain), ("proxy", proxy)):
                runs[label].append(
                    bench.run_wrk(server.base + query, opts.duration, opts.connections, opts.threads)
                )
        best = {k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in runs.items()}
        ratio = best["proxy"]["rps"] / best["plain"]["rps"] if best["plain"]["rps"] else None
        out[query] = {**best, "ratio": round(ratio, 3) if ratio else None}
    return out


def cold(plain: bench.Eprd, proxy: bench.Eprd, meta: dict[str, Any], count: int) -> dict[str, Any]:
    names = sorted({p["name"] for p in meta["packages"]})[:count]
    out = {}
    for label, server in (("plain", plain), ("proxy", proxy)):
        times = []
        for i, name in enumerate(names):
            status, seconds = get(server.base, f"/search?package={name}&all=true&cold={label}{i}")
            assert status == 200
            times.append(seconds)
        out[label] = {
            "requests": len(times),
            "p50_ms": round(statistics.median(times) * 1000, 2),
            "p90_ms": round(sorted(times)[int(len(times) * 0.9) - 1] * 1000, 2),
            "rps": round(len(times) / sum(times), 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 versions, 3 s runs")
    parser.add_argument("--versions", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cold-requests", type=int, default=50)
    opts = parser.parse_args(argv)
    opts.versions = opts.versions or (200 if opts.quick else 2000)
    opts.duration = opts.duration or (3.0 if opts.quick else 10.0)
    opts.warmup = opts.warmup or (1.0 if opts.quick else 2.0)
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/proxy.py needs wrk on PATH (Debian/Ubuntu: apt-get install -y wrk)")
    meta = bench.collection(opts.versions, 1, 0.1)
    config = meta["config"]
    results: dict[str, Any] = {"versions": meta["versions_total"]}
    work = Path(tempfile.mkdtemp(prefix="eprd-proxy-bench-"))
    upstream_config = work / "upstream.yml"
    upstream_config.write_text(
        f"package_paths:\n  - {bench.ROOT / 'testdata/packages'}\n  - {bench.ROOT / 'testdata/zips'}\n"
    )
    try:
        upstream = start(str(upstream_config), work / "upstream-cache", "upstream")
        plain = start(config, work / "plain-cache", "plain", ["-package-paths-enable-watcher=false"])
        proxy_args = ["-feature-proxy-mode", "-proxy-to", upstream.base, "-proxy-allow-insecure"]
        proxy = start(
            config, work / "proxy-cache", "proxy", ["-package-paths-enable-watcher=false", *proxy_args]
        )
        results["warm"] = warm(plain, proxy, opts)
        results["cold"] = cold(plain, proxy, meta, opts.cold_requests)
    finally:
        bench.PROCS.stop_all()
    bench.OUT.mkdir(parents=True, exist_ok=True)
    (bench.OUT / "proxy.json").write_text(json.dumps(results, indent=2))
    rows = []
    for query, r in results["warm"].items():
        ok = r["ratio"] is not None and r["ratio"] >= TARGET_RATIO
        rows.append(
            [f"warm {query}", f"{r['plain']['rps']:.0f}", f"{r['proxy']['rps']:.0f}", f"{r['ratio']:.2f}x",
             f"p99 {r['plain']['p99_ms']:.1f} / {r['proxy']['p99_ms']:.1f}",
             f">= {TARGET_RATIO}x {bench.met(ok)}"]
        )  # fmt: skip
    c = results["cold"]
    rows.append(
        ["cold /search?package=<each>", f"{c['plain']['rps']:.0f}", f"{c['proxy']['rps']:.0f}",
         f"{c['proxy']['rps'] / c['plain']['rps']:.2f}x",
         f"p50 {c['plain']['p50_ms']:.1f} / {c['proxy']['p50_ms']:.1f}", "(no target)"]
    )  # fmt: skip
    print(f"proxy mode, {results['versions']} local versions, upstream: eprd's testdata")
    print(bench.table(rows, ["case", "plain req/s", "proxy req/s", "ratio", "ms plain / proxy", "target"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
