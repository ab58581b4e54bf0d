"""Where a cold build from the lock file spends its time, step by step.

Usage: .venv/bin/python bench/steps.py [--recipe qemu_x86_64] [--runs 3] [--downloads DIR]

Each run copies the downloads and compressed layers of DIR (default ~/.cache/onie-builder,
hard links, as bench/build.py's "cold build from the lock file" case) into a fresh cache,
then runs `build --force` from a lock file in this process with the build's steps wrapped
to note when each starts and ends. Printed: each step's start and end (seconds since the
command began), the median over the runs. The SBOMs are drafted in their own process while
the images are made, so they show no step of their own; the wait for them is inside
"write_sboms". The wrapped steps' modules are imported before the command starts, where a
user's build imports most of them after starting the kernel's unpacking: the checks start
~0.25 s later here than in `bench/build.py`'s runs, and the whole takes that much longer.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STEPS = [("builder.preflight", "check_packages"), ("builder.build", "make_tree"),
         ("builder.build", "write_outputs"), ("builder.build", "measure_sizes"),
         ("builder.build", "write_images"), ("builder.build", "write_sboms"),
         ("builder.build", "render_manifest"), ("builder.build", "write_provenance"),
         ("builder.build", "publish")]


def timed(run: str, work: Path, cache: Path) -> dict[str, tuple[float, float]]:
    """One build in a child process (a fresh interpreter, as a user's), its steps' times."""
    context = multiprocessing.get_context("spawn")  # not a daemon: the build starts processes
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_build, run, str(work), str(cache)).result()


def _build(target: str, work: str, cache: str) -> dict[str, tuple[float, float]]:
    start = time.perf_counter()
    os.chdir(work)
    os.environ.update(ONIE_BUILDER_CACHE=cache, SOURCE_DATE_EPOCH="1700000000")
    seen: dict[str, tuple[float, float]] = {}

    def wrap(module: Any, name: str) -> None:
        real: Callable[..., Any] = getattr(module, name)

        @functools.wraps(real)
        def step(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter() - start
            try:
                return real(*args, **kwargs)
            finally:
                seen[name] = (began, time.perf_counter() - start)

        setattr(module, name, step)

    import importlib

    from builder.cli import main

    for module, name in STEPS:  # imported here, before the command: the first step starts late
        wrap(importlib.import_module(module), name)
    sys.argv = ["onie-builder", "-q", "build", "--allow-untrusted", "--force", target]
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"the build failed ({exc.code})") from None
    seen["(end)"] = (time.perf_counter() - start, time.perf_counter() - start)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="qemu_x86_64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--downloads", type=Path, default=Path.home() / ".cache/onie-builder")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from build import cli, downloads_only  # bench/build.py

    runs: list[dict[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory(prefix="ob-steps-") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(ROOT / "recipes", work / "recipes")
        target = f"recipes/platforms/{args.recipe}.yaml"
        cli(work, downloads_only(args.downloads, Path(tmp) / "lock", layers=False), "lock", target)
        for run in range(args.runs):
            cache = downloads_only(args.downloads, Path(tmp) / f"run-{run}", layers=True)
            os.sync()
            runs.append(timed(target, work, cache))
    print(f"recipe {args.recipe}, cold build from the lock file, median of {args.runs} runs\n")
    print(f"| {'step':<17} | {'start':>6} | {'end':>6} | {'seconds':>7} |")
    print(f"|{'-' * 19}|{'-' * 8}|{'-' * 8}|{'-' * 9}|")
    for _, name in [*STEPS, ("", "(end)")]:
        began = statistics.median(r[name][0] for r in runs)
        ended = statistics.median(r[name][1] for r in runs)
        print(f"| {name:<17} | {began:6.2f} | {ended:6.2f} | {ended - began:7.2f} |")


if __name__ == "__main__":
    main()
