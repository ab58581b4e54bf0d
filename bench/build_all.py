"""Benchmark of `build --all`: every shipped platform with 1 and 2 jobs, cold and warm.

Usage: python bench/build_all.py [--cache DIR] [--runs N] [--jobs 1 2]

Each case runs the real CLI in a subprocess (imports included) into a fresh output folder.
Definitions (downloads are never timed: they measure the mirror, not the builder):
- cold: packages downloaded and unpacked in the cache beforehand, but the derived cache
  (compressed initramfs archives) emptied, so every initramfs is compressed and every image
  made;
- warm: the derived cache filled by an earlier build; the output folder is new, so every
  image is made again (only the initramfs compression is reused);
- no-op: the same build again into the same folder: every platform is up to date.
The cache folder is the bench's own (default: a folder under the system temp folder, kept
between runs so downloads happen once); SOURCE_DATE_EPOCH is fixed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(cache: Path, out: Path, jobs: int) -> float:
    """Run `build --all -j JOBS` once; return the wall-clock seconds."""
    env = {**os.environ, "ONIE_BUILDER_CACHE": str(cache), "SOURCE_DATE_EPOCH": "1700000000",
           "ONIE_BUILDER_RECIPES": str(ROOT / "recipes")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "builder", "-q", "build", "--allow-untrusted",
                    "--all", "-j", str(jobs),
                    "--no-lock", "--out", str(out)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(cache: Path, work: Path, jobs: int, runs: int) -> dict[str, float]:
    """Median seconds of the cold, warm and no-op cases for one job count."""
    times: dict[str, list[float]] = {"cold": [], "warm": [], "no-op": []}
    for n in range(runs):
        shutil.rmtree(cache / "derived", ignore_errors=True)
        out = work / f"out-{jobs}-{n}-cold"
        times["cold"].append(cli(cache, out, jobs))
        warm = work / f"out-{jobs}-{n}-warm"
        times["warm"].append(cli(cache, warm, jobs))
        times["no-op"].append(cli(cache, warm, jobs))
        shutil.rmtree(out)
        shutil.rmtree(warm)
    return {case: statistics.median(values) for case, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "onie-builder-bench-cache")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    platforms = sorted(p.stem for p in (ROOT / "recipes" / "platforms").glob("*.yaml"))
    with tempfile.TemporaryDirectory(prefix="ob-bench-all-") as tmp:
        work = Path(tmp)
        print(f"priming the download cache {args.cache} ...", flush=True)
        cli(args.cache, work / "prime", max(args.jobs))
        shutil.rmtree(work / "prime")
        results = {jobs: measure(args.cache, work, jobs, args.runs) for jobs in args.jobs}
    print(f"\nbuild --all: {len(platforms)} platforms ({', '.join(platforms)}), "
          f"{os.cpu_count()} CPUs, median of {args.runs} run(s)\n")
    print(f"{'jobs':>4}  {'cold s':>8}  {'warm s':>8}  {'no-op s':>8}")
    for jobs, r in results.items():
        print(f"{jobs:>4}  {r['cold']:>8.1f}  {r['warm']:>8.1f}  {r['no-op']:>8.1f}")


if __name__ == "__main__":
    main()
