"""The build pipeline: recipe -> resolved components -> file tree -> initramfs -> out/<platform>/."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import __version__
from builder.cache import Cache, sha256_file, write_atomic
from builder.cpio import Compression, compress, render_cpio
from builder.initramfs import Context, make_tree
from builder.lock import Lock
from builder.recipe import Recipe
from builder.render import BUILTIN_TEMPLATES
from builder.rootfs import Kind, Tree
from builder.sources import Resolution, Resolver, find_apt_sources

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
KERNEL = "vmlinuz"
INITRAMFS = "initrd.img"
MANIFEST_FORMAT = "onie-builder-manifest/1"
# Input digests of the last build per platform: kept beside, not inside, the reproducible output.
STAMPS = ".stamps"
PACKAGE_DIR = Path(__file__).resolve().parent

Step = Callable[[str], None]


@dataclass(frozen=True)
class BuildOptions:
    """How to build: where to, from which lock and archive, and at what time."""

    out_dir: Path
    source_date_epoch: int
    lock: Lock | None = None
    mirror: str | None = None
    force: bool = False


@dataclass(frozen=True)
class BuildResult:
    """What a platform build produced."""

    platform: str
    out: Path
    outputs: dict[str, dict[str, Any]]
    skipped: bool
    seconds: float


def build_platform(recipe: Recipe, recipe_files: list[Path], options: BuildOptions,
                   cache: Cache, step: Step = log.info) -> BuildResult:
    """Build one platform into ``out/<platform>/``; the previous output survives any failure."""
    start = time.monotonic()
    platform = recipe.platform_string
    final = options.out_dir / platform
    step(f"{platform}: resolving components")
    resolver = Resolver(recipe, cache, find_apt_sources(recipe, options.mirror), options.lock)
    resolution = resolver.resolve()
    inputs = fingerprint(recipe, resolution, options)
    stamp = options.out_dir / STAMPS / f"{platform}.json"
    if not options.force and (previous := read_up_to_date(final, stamp, inputs)) is not None:
        step(f"{platform}: up to date")
        return BuildResult(platform, final, previous["outputs"], True, time.monotonic() - start)
    step(f"{platform}: assembling the initramfs tree")
    tree = make_tree(Context(recipe, resolution, options.source_date_epoch))
    staging = make_staging(options.out_dir, platform)
    try:
        outputs = write_outputs(staging, recipe, resolution, tree, options, cache, step)
        manifest = render_manifest(recipe, recipe_files, resolution, tree, outputs, options)
        write_atomic(staging / MANIFEST, manifest.encode())
        outputs[MANIFEST] = {"sha256": hashlib.sha256(manifest.encode()).hexdigest(),
                             "size": len(manifest.encode())}
        publish(staging, final)
        write_atomic(stamp, json.dumps({"inputs": inputs, "outputs": outputs}).encode())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    step(f"{platform}: wrote {final}")
    return BuildResult(platform, final, outputs, False, time.monotonic() - start)


def make_staging(out_dir: Path, platform: str) -> Path:
    """A fresh folder next to the final one, so publishing is a rename on the same filesystem."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{platform}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def write_outputs(staging: Path, recipe: Recipe, resolution: Resolution, tree: Tree,
                  options: BuildOptions, cache: Cache, step: Step) -> dict[str, dict[str, Any]]:
    """Write the kernel and the compressed initramfs; return their digests and sizes."""
    shutil.copyfile(resolution.kernel.image, staging / KERNEL)
    compression = recipe.initramfs.compression
    step(f"{recipe.platform_string}: writing the initramfs ({len(tree)} entries, "
         f"{compression.value})")
    archive = render_cpio(tree, options.source_date_epoch)
    (staging / INITRAMFS).write_bytes(compressed(archive, compression, cache))
    return {name: {"sha256": sha256_file(staging / name), "size": (staging / name).stat().st_size}
            for name in (KERNEL, INITRAMFS)}


def compressed(archive: bytes, compression: Compression, cache: Cache) -> bytes:
    """Compress through the cache: the same archive is compressed once (warm builds stay fast)."""
    digest = hashlib.sha256(archive).hexdigest()
    key = cache.root / "derived" / f"{digest}.{compression.value}"
    if key.is_file():
        return key.read_bytes()
    data = compress(archive, compression)
    write_atomic(key, data)
    return data


def publish(staging: Path, final: Path) -> None:
    """Swap the staged output into place with renames; readers see the old or the new tree."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, final)


def kernel_cmdline(recipe: Recipe) -> str:
    """The command line the image boots with: the console from the platform, then the recipe's."""
    console = recipe.platform.console
    return " ".join(x for x in (f"console={console.device},{console.speed}",
                                recipe.kernel.cmdline) if x)


def fingerprint(recipe: Recipe, resolution: Resolution, options: BuildOptions) -> str:
    """A digest of every input: a matching one means the output need not be rebuilt."""
    h = hashlib.sha256()
    h.update(recipe.model_dump_json().encode())
    h.update(f"{__version__} {options.source_date_epoch}".encode())
    for pin in resolution.pins:
        h.update(f"{pin.name} {pin.version} {pin.sha256}\n".encode())
    for item in resolution.components:
        h.update(f"{item.key} {item.sha256}\n".encode())
    folders = [PACKAGE_DIR, BUILTIN_TEMPLATES, *recipe.templates, *recipe.initramfs.overlays]
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_file() and "__pycache__" not in path.parts:
                st = path.stat()
                h.update(f"{path} {st.st_size} {st.st_mtime_ns} {st.st_mode}\n".encode())
    return h.hexdigest()


def read_up_to_date(final: Path, stamp: Path, inputs: str) -> dict[str, Any] | None:
    """The last build's record if it had the same inputs and its outputs are still there."""
    try:
        record: dict[str, Any] = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if record.get("inputs") != inputs:
        return None
    for name, info in record.get("outputs", {}).items():
        path = final / name
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return None
    return record


def render_manifest(recipe: Recipe, recipe_files: list[Path], resolution: Resolution,
                    tree: Tree, outputs: dict[str, dict[str, Any]],
                    options: BuildOptions) -> str:
    """The manifest: outputs, components with source/version/sha256, and every initramfs file."""
    components = [{"name": pin.name, "source": "debian", "version": pin.version,
                   "arch": pin.arch, "sha256": pin.sha256, "filename": pin.filename}
                  for pin in resolution.pins]
    components += [{"name": item.key, "source": item.key.split(":", 1)[0], "version": "",
                    "sha256": item.sha256} for item in resolution.components if item.file]
    files = [{"path": e.path, "type": e.kind.name.lower(), "mode": f"{e.mode:04o}",
              "origin": e.origin,
              **({"sha256": e.sha256(), "size": len(e.content())} if e.kind is Kind.FILE else {}),
              **({"target": e.target} if e.kind is Kind.SYMLINK else {}),
              **({"rdev": list(e.rdev)} if e.kind in (Kind.CHAR, Kind.BLOCK) else {})}
             for e in tree.entries()]
    doc = {
        "format": MANIFEST_FORMAT,
        "builder_version": __version__,
        "platform": recipe.platform_string,
        "arch": recipe.platform.arch.value,
        "recipe": {"name": recipe.name, "files": [f.name for f in recipe_files]},
        "source_date_epoch": options.source_date_epoch,
        "kernel": {"release": resolution.kernel.release, "cmdline": kernel_cmdline(recipe)},
        "outputs": outputs,
        "components": components,
        "initramfs": {"compression": recipe.initramfs.compression.value, "files": files},
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
