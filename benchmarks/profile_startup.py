#!/usr/bin/env python3
"""Where eprd's start-up time goes: cProfile over ``eprd -dry-run`` on a generated collection.

    .venv/bin/python benchmarks/profile_startup.py [--versions 2000] [--top 25]

Uses (or generates) the same cached collection as benchmarks/run.py, runs
``python -m cProfile -m eprd -dry-run -package-paths-workers 1`` on it (all in one process) and
prints the functions with the most cumulative and own time, and own time summed per
source file. The profile is kept in benchmarks/out/startup.prof for snakeviz/pstats.

Then, without the profiler, what sending loaded versions from a loader process to eprd costs:
the first ``--pickle-sample`` versions are loaded here and pickled and unpickled as
``eprd.indexers.local.collection.load_many`` sends them (cProfile in one process never sees it).
"""

from __future__ import annotations

import argparse
import os
import pickle
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
    parser.add_argument("--pickle-sample", type=int, default=300, help="versions for the pickling cost")
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
    pickling(meta, args.pickle_sample)
    return done.returncode


def pickling(meta: dict[str, object], sample: int) -> None:
    """Time the pickling of loaded versions between a loader process and eprd, on a sample."""
    sys.path.insert(0, str(run.ROOT))  # (eprd from this checkout, as the profiled run used)
    from eprd.indexers.local.collection import _load_chunk
    from eprd.indexers.local.scan import scan
    from eprd.model.package import LoadOptions

    folder = os.path.dirname(str(meta["config"]))
    found = scan([os.path.join(folder, "packages"), os.path.join(folder, "zips")])
    locations = [c.location for c in found][:sample]
    started = time.monotonic()
    loaded = _load_chunk(locations, LoadOptions())
    load_s = time.monotonic() - started
    started = time.monotonic()
    data = pickle.dumps(loaded, protocol=pickle.HIGHEST_PROTOCOL)
    dumps_s = time.monotonic() - started
    started = time.monotonic()
    pickle.loads(data)
    loads_s = time.monotonic() - started
    scale = len(found) / max(len(locations), 1)
    print(
        f"\npickling {len(locations)} loaded versions: {len(data) / 1e6:.1f} MB, dumps {dumps_s:.3f} s, "
        f"loads {loads_s:.3f} s (loading them: {load_s:.2f} s); for all {len(found)} versions about "
        f"{dumps_s * scale:.2f} s in the loader processes and {loads_s * scale:.2f} s in eprd"
    )


if __name__ == "__main__":
    sys.exit(main())
