#!/usr/bin/env python3
"""``eprd mirror`` throughput against a local upstream: MB/s and versions/s.

    .venv/bin/python benchmarks/mirror.py [--quick] [--versions 200] [--size-kib 512] [--parallel 1,4,8]

Generates ``--versions`` signed zip packages (each with an incompressible blob of
``--size-kib`` KiB, signed by a throwaway OpenPGP key) under benchmarks/out/mirror/upstream,
serves them with an eprd process on loopback, and times complete ``eprd mirror -all`` runs
into an empty folder: with ``-verify-key`` at each ``--parallel`` value, once without a key (the
cost of verification), and an incremental re-run (everything kept: the check of what is
there). Whole command runs are timed, start-up and /search included. Results: a table on
stdout and benchmarks/out/mirror.json. No pass/fail: numbers are about this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out" / "mirror"
sys.path.insert(0, str(ROOT))

import pysequoia  # noqa: E402

from tests import pkgfactory  # noqa: E402  (the test suite's package builder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def generate(folder: Path, versions: int, size_kib: int) -> Path:
    """Signed zips into ``folder`` (reused when made with the same parameters); the key file."""
    stamp = folder / ".params"
    params = f"{versions} {size_kib}"
    if stamp.exists() and stamp.read_text() == params:
        return folder / ".key.asc"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tsk = pysequoia.Tsk.generate("Mirror Benchmark <bench@example.invalid>")
    signer = tsk.signer()
    packages = max(1, versions // 10)
    for i in range(versions):
        name, version = f"bench_{i % packages:03d}", f"1.{i // packages}.0"
        files = {"docs/blob.bin": os.urandom(size_kib * 1024)}
        data = pkgfactory.zip_bytes(pkgfactory.zip_entries(name, version, files=files))
        (folder / f"{name}-{version}.zip").write_bytes(data)
        sig = pysequoia.sign(signer, data, mode=pysequoia.SignatureMode.DETACHED)
        (folder / f"{name}-{version}.zip.sig").write_bytes(sig)
    (folder / ".key.asc").write_text(str(tsk.extract_certificate()))
    stamp.write_text(params)
    return folder / ".key.asc"


def start_upstream(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = OUT / "upstream.yml"
    config.write_text(f"package_paths:\n  - {folder}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPR_", "ELASTIC_APM_"))}
    env["EPR_CACHE_DIR"] = str(OUT / "cache")
    proc = subprocess.Popen(
        [sys.executable, "-m", "eprd", "-address", f"127.0.0.1:{port}", "-config", str(config)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the upstream eprd exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the upstream eprd did not become healthy")


def mirror(base: str, dest: Path, label: str, *args: str) -> dict[str, Any]:
    """One timed ``eprd mirror -all`` run; its summary numbers."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "eprd", "mirror", "-from", base, "-to", str(dest), "-all", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"eprd mirror failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    summary = next(line for line in done.stdout.splitlines() if line.startswith("mirror: "))
    words = summary.removeprefix("mirror: ").replace(",", "").split()
    added, kept, size = int(words[0]), int(words[2]), int(words[8])
    return {
        "run": label,
        "seconds": round(seconds, 3),
        "added": added,
        "kept": kept,
        "bytes": size,
        "mb_per_s": round(size / 1e6 / seconds, 1),
        "versions_per_s": round((added + kept) / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 versions of 256 KiB, parallel 4")
    parser.add_argument("--versions", type=int, default=200)
    parser.add_argument("--size-kib", type=int, default=512)
    parser.add_argument("--parallel", default="1,4,8")
    parser.add_argument("--output", type=Path, default=OUT.parent / "mirror.json")
    opts = parser.parse_args()
    if opts.quick:
        opts.versions, opts.size_kib, opts.parallel = 50, 256, "4"
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"generating {opts.versions} signed versions of ~{opts.size_kib} KiB ...", file=sys.stderr)
    key = generate(OUT / "upstream", opts.versions, opts.size_kib)
    proc, base = start_upstream(OUT / "upstream")
    dest = OUT / "dest"
    runs = []
    try:
        for parallel in [int(p) for p in opts.parallel.split(",")]:
            shutil.rmtree(dest, ignore_errors=True)
            label = f"-parallel {parallel} -verify-key K"
            runs.append(mirror(base, dest, label, "-parallel", str(parallel), "-verify-key", str(key)))
        label = f"-parallel {parallel} -verify-key K, re-run"  # everything is kept
        runs.append(mirror(base, dest, label, "-parallel", str(parallel), "-verify-key", str(key)))
        shutil.rmtree(dest, ignore_errors=True)
        runs.append(mirror(base, dest, f"-parallel {parallel}, no key", "-parallel", str(parallel)))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(dest, ignore_errors=True)
    print(f"\neprd mirror of {opts.versions} versions (~{opts.size_kib} KiB each) from a local eprd")
    print(f"{'run':<36} {'s':>7} {'added':>6} {'kept':>5} {'MB':>8} {'MB/s':>7} {'versions/s':>11}")
    for run in runs:
        print(
            f"{run['run']:<36} {run['seconds']:>7.2f} {run['added']:>6} {run['kept']:>5} "
            f"{run['bytes'] / 1e6:>8.1f} {run['mb_per_s']:>7.1f} {run['versions_per_s']:>11.1f}"
        )
    facts = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    opts.output.write_text(json.dumps({"params": vars(opts) | {"output": str(opts.output)}, "machine": facts,
                                       "runs": runs}, indent=2))  # fmt: skip
    print(f"\nwritten to {opts.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
