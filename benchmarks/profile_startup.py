#!/usr/bin/env python3
"""Where eprd's start-up time goes: cProfile over ``eprd -dry-run`` on a generated collection.

    .venv/bin/python benchmarks/profile_startup.py [--versions 2000] [--top 25]

Uses (or generates) the same cached collection as benchmarks/run.py, runs
``python -m cProfile -m eprd -dry-run -package-paths-workers 1`` on it (all in one process) and
prints the functions with the most cumulative and own time, and own time summed per
source file. The profile is kept in benchmarks/out/startup.prof for snakeviz/pstats.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run  # noqa: E402  (benchmarks/run.py: the collection cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=2000, help="collection size (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--zips", type=float, default=0.1)
    parser.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    args = parser.parse_args(argv)
    meta = run.collection(args.versions, args.seed, args.zips)
    out = run.OUT / "startup.prof"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "cProfile", "-o", str(out), "-m", "eprd", "-dry-run",
        "-config", meta["config"], "-require-package-signatures=false", "-log-level", "warn",
        "-package-paths-workers", "1",  # everything in the profiled process
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=str(run.ROOT), capture_output=True, text=True)
    seconds = time.monotonic() - started
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "(no output)")
    print(f"eprd -dry-run under cProfile: {seconds:.1f} s, exit code {done.returncode}")
    stats = pstats.Stats(str(out))
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    per_file: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        per_file[filename] += tottime
    total = sum(per_file.values()) or 1.0
    print("Own time per source file:")
    for filename, own in sorted(per_file.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {own:7.2f} s  {100 * own / total:5.1f} %  {filename}")
    print(f"\nprofile: {out}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
