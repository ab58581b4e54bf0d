"""Size benchmark: the compressed initramfs of a recipe with the installer toolset and of the
same recipe built discovery-only (`initramfs.discovery_only: true`), with each component's share.

Usage: .venv/bin/python bench/size.py [--recipe qemu_x86_64]

Both images are built with the real CLI (`build --no-images --no-lock`) from a throw-away work
folder, with the download cache of the environment ($ONIE_BUILDER_CACHE or the default one):
sizes do not depend on the cache. A component's figure is its files archived and compressed
alone with the image's settings (builder/initramfs/sizes.py, docs/formats.md "Sizes"); a file
several components need counts for the first of them in recipe order.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def build(work: Path, recipe: Path) -> dict[str, Any]:
    """Build ``recipe`` and return its manifest."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    proc = subprocess.run([sys.executable, "-m", "builder", "-q", "build", "--allow-untrusted",
                           str(recipe), "--json",
                           "--no-images", "--no-lock", "--out", str(work / "out" / recipe.stem)],
                          cwd=work, env=env, check=True, capture_output=True, text=True)
    out = Path(json.loads(proc.stdout)["result"][0]["out"])
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


def table(manifest: dict[str, Any]) -> list[str]:
    """The image's size, its layers and each component's share, as Markdown."""
    initramfs = manifest["initramfs"]
    size = manifest["outputs"]["initrd.img"]["size"]
    layers = ", ".join(f"{x['layer']} {x['size'] / 1e6:.2f}" for x in initramfs["layers"])
    rows = [f"initramfs: {size:,} bytes ({size / 1e6:.2f} MB, {initramfs['compression']}); "
            f"layers (MB): {layers}", "",
            "| component | entries | content MB | compressed alone MB |", "| --- | ---: | ---: | ---: |"]
    total = 0
    for c in initramfs["components"]:
        total += c["compressed"]
        rows.append(f"| {c['name']} | {c['entries']} | {c['bytes'] / 1e6:.2f} | "
                    f"{c['compressed'] / 1e6:.3f} |")
    rows.append(f"| sum | | | {total / 1e6:.2f} ({total / size - 1:+.0%} against the image) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="qemu_x86_64")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ob-size-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "recipes", work / "recipes")
        full = work / "recipes" / "platforms" / f"{args.recipe}.yaml"
        only = work / f"{args.recipe}_discovery_only.yaml"
        only.write_text(f"extends: {full}\ninitramfs:\n  discovery_only: true\n")
        manifests = [("with the installer toolset", build(work, full)),
                     ("discovery-only", build(work, only))]
    for title, manifest in manifests:
        print(f"\n### {args.recipe}, {title}\n")
        print("\n".join(table(manifest)))
    sizes = [m["outputs"]["initrd.img"]["size"] for _, m in manifests]
    print(f"\nthe toolset adds {(sizes[0] - sizes[1]) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
