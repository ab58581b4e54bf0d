"""Build benchmark for the default recipe: cold, warm, no-op, and the initramfs size.

Usage: .venv/bin/python bench/build.py [--recipe qemu_x86_64] [--runs 3] [--downloads DIR]

With ``--downloads DIR`` (a cache folder such as ~/.cache/onie-builder) the cold case is
left out and the others take their downloads from DIR (hard links), downloading nothing.

Each case runs the real CLI in a subprocess (imports included, as users pay them), from a
throw-away work folder with its own lock file, and builds everything the recipe asks for
(the default recipe: kernel, initramfs, and the netboot, ISO, UKI and updater images).
Definitions:
- cold: empty cache (indexes, packages, unpacked trees all downloaded/unpacked);
- cold, downloads cached: `lock` + `build` with a cache that holds only the downloads (the
  .debs, the signed indexes and the pointers to them): the Packages index parsed, every
  package unpacked (the kernel's modules left packed), every layer compressed;
- cold, downloads and layers cached: the same with the compressed initramfs layers kept too,
  so what is left is parsing the index, unpacking the packages and listing them for the
  checks before the build;
- cold build from the lock file, downloads and layers cached: `build` alone with the lock
  file in place, as a CI runner builds a committed lock: the packages are pinned, so no
  Packages index is read; every package and the kernel are unpacked (the figure #20 aims
  at: a cold build, downloads excluded);
- warm: the cache filled by earlier builds, the recipe edited (its version, so
  /etc/machine.conf and /etc/os-release change): the tree is assembled again, the layers whose
  archive changed are compressed (here the small "files" layer), and every image is made;
- warm, --no-images: the same, building the kernel and initramfs only;
- warm, every layer compressed: as warm, with the compressed-layer cache emptied first (what a
  change to a package or to the kernel's module list costs);
- no-op: the same build again with nothing changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(work: Path, cache: Path, *args: str) -> float:
    env = {**os.environ, "ONIE_BUILDER_CACHE": str(cache), "SOURCE_DATE_EPOCH": "1700000000"}
    os.sync()  # the previous case's writes are on disk: each case starts from the same state
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "builder", "-q", *args], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def downloads_only(cache: Path, dest: Path, layers: bool) -> Path:
    """A new cache with the downloads of ``cache`` (hard links), and its layers if asked.
    ``dest`` must not exist: the bench deletes its caches only when it is done (``fresh``)."""
    shutil.copytree(cache / "blobs", dest / "blobs", copy_function=os.link)
    (dest / "indexes").mkdir()
    for pointer in (cache / "indexes").glob("*.json"):
        shutil.copy2(pointer, dest / "indexes" / pointer.name)
    if layers:  # not the package listings and check records: unpacking and checking make them
        shutil.copytree(cache / "derived", dest / "derived", copy_function=os.link,
                        ignore=shutil.ignore_patterns("contents", "checks"))
    return dest


def fresh(tmp: Path) -> Path:
    """A folder name not used before in ``tmp``. No cache is deleted between cases: on ext4
    without a journal (this machine's disk), creating files within 30 s of deleting thousands
    costs about 3 times as much (the inode allocator skips recently freed inodes, the
    kernel's ``recently_deleted``), which a build on a fresh runner never pays."""
    number = len(list(tmp.glob("again-*")))
    return tmp / f"again-{number}"


def forget_layers(cache: Path) -> None:
    """Empty the compressed-layer cache (and the check records, as a package change would
    miss them); the package listings stay, as the unpacked packages they describe do."""
    shutil.rmtree(cache / "derived" / "checks", ignore_errors=True)
    for path in (cache / "derived").glob("*"):
        if path.is_file():
            path.unlink()


def edited(recipe: str, label: str) -> str:
    """The recipe with another version (it is in /etc/machine.conf and /etc/os-release)."""
    return f'{recipe}version: "{label}"\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="qemu_x86_64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--downloads", type=Path, default=None,
                        help="take the downloads from this cache instead of a cold run")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ob-bench-") as tmp:
        work, cache = Path(tmp) / "work", Path(tmp) / "cache"
        shutil.copytree(ROOT / "recipes", work / "recipes")
        # By path: a name finds the shipped recipe (the search path), which edits do not touch.
        target = f"recipes/platforms/{args.recipe}.yaml"
        rows: list[tuple[str, list[float]]] = []
        if args.downloads is None:
            cold = cli(work, cache, "lock", target)
            cold += cli(work, cache, "build", "--allow-untrusted", target)
            rows.append(("cold (lock + build, empty cache)", [cold]))
        else:
            downloads_only(args.downloads, cache, layers=False)
            cli(work, cache, "lock", target)
            cli(work, cache, "build", "--allow-untrusted", target)
        for layers, label in ((False, "cold, downloads cached"),
                              (True, "cold, downloads and layers cached")):
            times = []
            for _ in range(args.runs):
                again = downloads_only(cache, fresh(Path(tmp)), layers)
                times.append(cli(work, again, "lock", target)
                             + cli(work, again, "build", "--allow-untrusted", "--force", target))
            rows.append((label, times))
        times = []
        for _ in range(args.runs):  # a CI runner: the lock file committed, the index not needed
            again = downloads_only(cache, fresh(Path(tmp)), layers=True)
            times.append(cli(work, again, "build", "--allow-untrusted", "--force", target))
        rows.append(("cold build from the lock file, downloads and layers cached", times))
        recipe = work / "recipes" / "platforms" / f"{args.recipe}.yaml"
        text = recipe.read_text()
        warm, quick, full, noop = [], [], [], []
        for run in range(args.runs):
            recipe.write_text(edited(text, f"2026.11-edit{run}"))
            warm.append(cli(work, cache, "build", "--allow-untrusted", target))
            noop.append(cli(work, cache, "build", "--allow-untrusted", target))
            recipe.write_text(edited(text, f"2026.11-quick{run}"))
            quick.append(cli(work, cache, "build", "--allow-untrusted", "--no-images", target))
            recipe.write_text(edited(text, f"2026.11-full{run}"))
            forget_layers(cache)
            full.append(cli(work, cache, "build", "--allow-untrusted", target))
        rows += [("warm (recipe edited)", warm), ("warm, --no-images", quick),
                 ("warm, every layer compressed", full),
                 ("no-op rebuild", noop)]
        (image,) = (work / "out").glob("*-r*")
        manifest = json.loads((image / "manifest.json").read_text())
    print(f"recipe {args.recipe}, {os.cpu_count()} CPUs, median of {args.runs} runs, load "
          f"average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after\n")
    width = max(len(name) for name, _ in rows)
    print(f"| {'case':<{width}} | {'seconds':>8} |")
    print(f"|{'-' * (width + 2)}|{'-' * 10}|")
    for name, values in rows:
        print(f"| {name:<{width}} | {statistics.median(values):8.2f} |")
    size = manifest["outputs"]["initrd.img"]["size"]
    files = len(manifest["initramfs"]["files"])
    print(f"\ninitramfs: {size:,} bytes ({size / 1e6:.2f} MB, {files} entries, "
          f"{manifest['initramfs']['compression']})")


if __name__ == "__main__":
    main()
