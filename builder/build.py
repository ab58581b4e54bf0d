"""The build pipeline: recipe -> resolved components -> file tree -> initramfs -> out/<platform>/."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from builder import __version__
from builder.components.cache import Cache, sha256_file, touch, write_atomic
from builder.components.lock import DEFAULT_LOCK, Lock
from builder.components.resolve import Archives, Resolution, Resolver, find_apt_sources
from builder.images import image_inputs, image_names, make_images, start_early
from builder.images.context import BootLoaders, ImageContext
from builder.initramfs import facts, ssh, transports
from builder.initramfs.assemble import Context, make_tree, render_mode_notes
from builder.initramfs.cpio import WrittenLayer, compress, layer_of, make_initramfs
from builder.initramfs.sizes import ComponentSize, measure_components
from builder.initramfs.tree import Kind, Tree
from builder.initramfs.trust import describe_trust, load_trust
from builder.progress import Phase, Step, plain_step
from builder.provenance.documents import (
    describe_provenance,
    write_provenance,
    write_sboms,
)
from builder.provenance.renderer import SbomRenderer
from builder.recipe.formats import Compression, ImageFormat
from builder.recipe.model import Arch, Recipe
from builder.render import BUILTIN_TEMPLATES
from builder.result import BuildResult
from builder.stamp import outputs_present, read_stamp, snapshot, stamp_path, unchanged

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
KERNEL = "vmlinuz"
INITRAMFS = "initrd.img"
MANIFEST_FORMAT = "onie-builder-manifest/1"
PACKAGE_DIR = Path(__file__).resolve().parent

@dataclass(frozen=True)
class BuildOptions:
    """How to build: where to, from which lock and archive, and at what time."""

    out_dir: Path
    source_date_epoch: int
    lock: Lock | None = None
    lock_path: Path | None = None
    mirror: str | None = None
    force: bool = False
    images: bool = True  # False: the kernel and initramfs only, not the recipe's images.formats


def build_platform(recipe: Recipe, recipe_files: list[Path], options: BuildOptions,
                   cache: Cache, step: Step = plain_step,
                   resolver: Resolver | None = None) -> BuildResult:
    """Build one platform into ``out/<platform>/``; the previous output survives any failure.
    ``resolver`` is the one the checks before the build used (``make_resolver``), if any."""
    start = time.monotonic()
    platform = recipe.platform_string
    final = options.out_dir / platform
    step(Phase.RESOLVE, f"{platform}: resolving components")
    resolver = resolver or make_resolver(recipe, recipe_files[-1], options, cache)
    resolution = resolver.resolve()
    files = snapshot(input_paths(recipe, recipe_files, options))  # before reading: edits rebuild
    digest = resolution_digest(resolution)
    stamp = stamp_path(options.out_dir, recipe_files[-1])
    if (previous := find_previous(stamp, options, digest)) is not None:
        step(Phase.DONE, f"{platform}: up to date")
        return BuildResult(platform, final, previous["outputs"], True, time.monotonic() - start,
                           recorded_sizes(previous))
    step(Phase.ASSEMBLE, f"{platform}: assembling the initramfs tree")
    # The boot loaders, which need neither kernel nor initramfs, are made on side threads
    # while the tree is assembled and written. The SBOMs are drafted in a process of its own
    # (builder.provenance.renderer): it reads the components' licences beside the tree's
    # assembly, then drafts while the images are made.
    side = ThreadPoolExecutor(max_workers=2)
    renderer: SbomRenderer | None = None
    staging: Path | None = None
    try:
        renderer = SbomRenderer(recipe, resolution, cache.root)
        early = start_early(recipe, options.source_date_epoch, side) if options.images else {}
        with facts.remember(cache.root / "derived" / "facts.json"):
            tree = make_tree(Context(recipe, resolution, options.source_date_epoch))
            for note in render_mode_notes(tree):
                step(Phase.ASSEMBLE, f"{platform}: {note}")
        for warning in ssh.render_warnings(recipe):
            log.warning("%s: warning: %s", platform, warning)
        drafts = renderer.draft(tree, [KERNEL, INITRAMFS,
                                       *(image_names(recipe) if options.images else [])],
                                options.source_date_epoch)
        staging = make_staging(options.out_dir, platform)
        outputs, layers = write_outputs(staging, recipe, resolution, tree, options, cache, step)
        sizes = measure_sizes(recipe, tree, options, cache)
        if options.images:
            outputs.update(write_images(staging, recipe, resolution, tree, options, step, early))
        step(Phase.RECORD, f"{platform}: writing the SBOMs and the provenance")
        inventory, sboms = write_sboms(staging, recipe, resolution, renderer.result(drafts),
                                       outputs, options.source_date_epoch, renderer.render)
        outputs.update(sboms)
        kept = {} if options.images else keep_images(final, staging, outputs)
        manifest = render_manifest(recipe, recipe_files, resolution, tree, outputs, layers, options,
                                   sizes, kept)
        write_atomic(staging / MANIFEST, manifest.encode())
        outputs[MANIFEST] = {"sha256": hashlib.sha256(manifest.encode()).hexdigest(),
                             "size": len(manifest.encode())}
        # Last: the statement signs every other output, the manifest included.
        outputs.update(write_provenance(
            staging, inventory, recipe, {n: str(o["sha256"]) for n, o in outputs.items()},
            recipe_files, options.lock_path, options.images))
        publish(staging, final)
        record = {"platform": platform, "epoch": options.source_date_epoch, "images": options.images,
                  # An image trusting no key is rebuilt only with --allow-untrusted (no fast path).
                  "trusted": bool(recipe.trust.keys or recipe.discovery.insecure),
                  "lock": str(options.lock_path.resolve()) if options.lock_path else None,
                  "resolution": digest, "files": files, "outputs": outputs,
                  "sizes": [[s.name, s.compressed] for s in sizes]}
        write_atomic(stamp, json.dumps(record, sort_keys=True).encode())
    finally:
        side.shutdown(cancel_futures=True)
        if renderer is not None:
            renderer.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    step(Phase.DONE, f"{platform}: wrote {final}")
    return BuildResult(platform, final, outputs, False, time.monotonic() - start,
                       tuple((s.name, s.compressed) for s in sizes))


def make_resolver(recipe: Recipe, recipe_file: Path, options: BuildOptions, cache: Cache,
                  archives: Archives | None = None) -> Resolver:
    """The resolver a build of ``recipe`` uses, for the checks before it too; ``archives``
    shares the archives (their loaded indexes) between the platforms of one run."""
    return Resolver(recipe, cache, find_apt_sources(recipe, options.mirror), options.lock,
                    relock=relock_command(recipe_file, options.lock_path), archives=archives)


def make_staging(out_dir: Path, platform: str) -> Path:
    """A fresh folder next to the final one, so publishing is a rename on the same filesystem."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{platform}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def keep_images(final: Path, staging: Path,
                outputs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``--no-images``: the images an earlier build left in ``final``, hard-linked into the
    staging folder so that publishing does not delete them. Each is listed as the earlier
    manifest listed it, with the digest of the initramfs it holds (``initrd_sha256``): they
    are not this build's outputs, and their initramfs is not this build's ``initrd.img``."""
    try:
        earlier = json.loads((final / MANIFEST).read_text())
        found = {str(k): dict(v) for k, v in earlier.get("kept_images", {}).items()}
        initrd = str(earlier["outputs"][INITRAMFS]["sha256"])
        found.update((str(name), {**info, "initrd_sha256": initrd})
                     for name, info in earlier["outputs"].items() if name not in found)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no earlier build, or one this version cannot read: nothing to keep
    kept: dict[str, dict[str, Any]] = {}
    for name, info in sorted(found.items()):
        source, dest = final / name, staging / name
        if name in outputs or name == MANIFEST or dest.exists() or source.is_symlink() \
                or not source.is_file() or source.stat().st_size != info.get("size"):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, dest)
        except OSError:
            shutil.copy2(source, dest)
        kept[name] = {k: info[k] for k in ("sha256", "size", "initrd_sha256") if k in info}
    return kept


def write_outputs(staging: Path, recipe: Recipe, resolution: Resolution, tree: Tree,
                  options: BuildOptions, cache: Cache,
                  step: Step) -> tuple[dict[str, dict[str, Any]], list[WrittenLayer]]:
    """Write the kernel and the compressed initramfs; return their digests and sizes, and
    where each initramfs layer sits."""
    shutil.copyfile(resolution.kernel.image, staging / KERNEL)
    compression = recipe.initramfs.compression
    step(Phase.COMPRESS, f"{recipe.platform_string}: writing the initramfs ({len(tree)} entries, "
         f"{compression.value})")
    layers = make_initramfs(tree, staging / INITRAMFS, options.source_date_epoch, compression,
                            recipe.initramfs.compression_level,
                            x86=recipe.platform.arch is Arch.X86_64,
                            compressor=partial(compressed, cache=cache), jobs=os.cpu_count() or 1)
    files = {name: {"sha256": sha256_file(staging / name), "size": (staging / name).stat().st_size}
             for name in (KERNEL, INITRAMFS)}
    return files, layers


def measure_sizes(recipe: Recipe, tree: Tree, options: BuildOptions,
                  cache: Cache) -> list[ComponentSize]:
    """Each component's compressed size (builder.initramfs.sizes), through the layer cache."""
    initramfs = recipe.initramfs

    def squeeze(archive: bytes, x86: bool) -> bytes:
        return compressed(archive, initramfs.compression, initramfs.compression_level, x86,
                          cache=cache)

    return measure_components(tree, options.source_date_epoch, squeeze,
                              x86=recipe.platform.arch is Arch.X86_64, jobs=os.cpu_count() or 1)


def recorded_sizes(record: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """The component sizes a build record keeps (none in records from older builds)."""
    return tuple((str(name), int(size)) for name, size in record.get("sizes", []))


def write_images(staging: Path, recipe: Recipe, resolution: Resolution, tree: Tree,
                 options: BuildOptions, step: Step,
                 early: Mapping[ImageFormat, Future[BootLoaders]] | None = None,
                 ) -> dict[str, dict[str, Any]]:
    """Build the recipe's boot images (builder.images) beside the kernel, with the boot
    loaders ``start_early`` started; digests and sizes."""
    if not recipe.images.formats:
        return {}
    step(Phase.IMAGES, f"{recipe.platform_string}: making images "
         f"({', '.join(f.value for f in recipe.images.formats)})")
    osrel = tree.get("/etc/os-release")
    kernel = resolution.kernel
    context = ImageContext(
        kernel=staging / KERNEL, initramfs=staging / INITRAMFS, cmdline=kernel_cmdline(recipe),
        kernel_release=kernel.release, os_release=osrel.content().decode() if osrel else "",
        source_date_epoch=options.source_date_epoch,
        kernel_roots=tuple(p.root for p in kernel.packages), early=early or {})
    return {name: {"sha256": sha256_file(staging / name), "size": (staging / name).stat().st_size}
            for name in make_images(recipe, staging, context, jobs=os.cpu_count() or 1)}


# Bumped whenever compress() changes its output for the same settings.
COMPRESSOR_REVISION = 3


def compressed(archive: bytes, compression: Compression, level: int | None, x86: bool,
               cache: Cache) -> bytes:
    """Compress through the cache: an archive (a layer) already compressed with the same
    settings is reused, so a build compresses only the layers that changed."""
    digest = hashlib.sha256(archive).hexdigest()
    settings = f"{compression.value}-{level}-{'x86' if x86 else 'any'}-r{COMPRESSOR_REVISION}"
    key = cache.root / "derived" / f"{digest}.{settings}"
    if key.is_file():
        touch(key)
        return key.read_bytes()
    data = compress(archive, compression, level, x86=x86)
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


def relock_command(recipe_file: Path, lock_path: Path | None) -> str:
    """The command that adds this recipe to its lock file: the recipe by path, as a name may
    lead elsewhere, and the lock file when it is not the default one."""
    lock = [] if lock_path is None or lock_path == DEFAULT_LOCK else ["--lock", str(lock_path)]
    here = Path.cwd()
    shown = recipe_file.relative_to(here) if recipe_file.is_relative_to(here) else recipe_file
    return shlex.join(["onie-builder", "lock", str(shown), *lock])


def kernel_cmdline(recipe: Recipe) -> str:
    """The command line the image boots with: the console from the platform, then the recipe's."""
    console = recipe.platform.console
    return " ".join(x for x in (f"console={console.device},{console.speed}",
                                recipe.kernel.cmdline) if x)


def input_paths(recipe: Recipe, recipe_files: list[Path], options: BuildOptions) -> list[Path]:
    """Every file and folder a build reads besides content-addressed downloads."""
    local = [c.path for c in (recipe.kernel, *recipe.initramfs.components) if c.path is not None]
    paths = [*recipe_files, PACKAGE_DIR, BUILTIN_TEMPLATES, *recipe.templates,
             *recipe.initramfs.overlays, *local, *recipe.trust.keys,
             *image_inputs(recipe), *transports.input_files(recipe), *ssh.input_files(recipe),
             *([recipe.provenance.key] if recipe.provenance.key else [])]
    return paths + ([options.lock_path] if options.lock_path else [])


def resolution_digest(resolution: Resolution) -> str:
    """A digest of what the recipe resolved to: each package pin and pinned file."""
    h = hashlib.sha256()
    for pin in resolution.pins:
        h.update(f"{pin.name} {pin.version} {pin.sha256}\n".encode())
    for item in resolution.components:
        h.update(f"{item.key} {item.sha256}\n".encode())
    return h.hexdigest()


def find_previous(stamp: Path, options: BuildOptions, digest: str) -> dict[str, Any] | None:
    """The last build's record when its inputs, resolution and outputs are all unchanged."""
    record = read_stamp(stamp)
    if (options.force or record is None or record.get("resolution") != digest
            or record.get("epoch") != options.source_date_epoch
            or record.get("images") != options.images):
        return None
    final = options.out_dir / record.get("platform", "")
    if not unchanged(record.get("files", {})) or not outputs_present(final, record["outputs"]):
        return None
    return record


def render_manifest(recipe: Recipe, recipe_files: list[Path], resolution: Resolution,
                    tree: Tree, outputs: dict[str, dict[str, Any]], layers: list[WrittenLayer],
                    options: BuildOptions, sizes: list[ComponentSize],
                    kept: dict[str, dict[str, Any]] | None = None) -> str:
    """The manifest: outputs, components with source/version/sha256, every initramfs file and
    each component's compressed size; with ``--no-images``, the images kept from an earlier
    build (``keep_images``)."""
    components = [{"name": pin.name, "source": "debian", "version": pin.version,
                   "arch": pin.arch, "sha256": pin.sha256, "filename": pin.filename}
                  for pin in resolution.pins]
    components += [{"name": item.key, "source": item.key.split(":", 1)[0], "version": "",
                    "sha256": item.sha256} for item in resolution.components if item.file]
    files = [{"path": e.path, "type": e.kind.name.lower(), "mode": f"{e.mode:04o}",
              "origin": e.origin, "layer": layer_of(e).value,
              # A secret file (CHAP secrets) is listed without its digest or size.
              **({"sha256": e.sha256(), "size": len(e.content())}
                 if e.kind is Kind.FILE and not e.secret else {}),
              **({"secret": True} if e.secret else {}),
              **({"target": e.target} if e.kind is Kind.SYMLINK else {}),
              **({"component": tree.owners[e.path]} if e.path in tree.owners else {}),
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
        "initramfs": {"compression": recipe.initramfs.compression.value, "files": files,
                      "layers": [{"layer": w.layer.value, "offset": w.offset, "size": w.size,
                                  "sha256": w.sha256, "archive_sha256": w.archive_sha256,
                                  "entries": w.entries} for w in layers],
                      "components": [{"name": s.name, "entries": s.entries, "bytes": s.bytes,
                                      "compressed": s.compressed} for s in sizes]},
        "trust": describe_trust(load_trust(recipe.trust, options.source_date_epoch)),
        "ssh": ssh.describe_ssh(recipe),
        "provenance": describe_provenance(recipe),
        **({"kept_images": kept} if kept else {}),
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
