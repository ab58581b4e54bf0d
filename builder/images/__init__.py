"""Per-platform boot images: one module per format, registered here by ``ImageFormat``.

The build calls ``make_images`` once the kernel and the initramfs are in the staging
folder; each format's builder writes its files below that folder (so they are published
atomically with the rest) and returns their paths relative to it, for the manifest.
Builders read host tools through ``builder.process`` and take every time from
``ImageContext.source_date_epoch``: two builds give identical bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from builder.images.context import BootLoaders, ImageContext
from builder.recipe.formats import ImageFormat

if TYPE_CHECKING:
    from builder.recipe.model import Recipe


Builder = Callable[["Recipe", Path, ImageContext], list[str]]


def builders() -> dict[ImageFormat, Builder]:
    """The table: each format and the function that makes it."""
    from builder.images import fit, iso, netboot, uki, updater

    return {
        ImageFormat.NETBOOT: netboot.make_netboot,
        ImageFormat.FIT: fit.make_fit,
        ImageFormat.UKI: uki.make_uki,
        ImageFormat.UPDATER: updater.make_updater,
        ImageFormat.ISO: iso.make_iso,
    }


def image_names(recipe: Recipe) -> list[str]:
    """The files ``make_images`` writes for ``recipe``, in its order: each format's
    ``names``, which its builder returns."""
    from builder.images import fit, iso, netboot, uki, updater

    table = {ImageFormat.NETBOOT: netboot.names, ImageFormat.FIT: fit.names,
             ImageFormat.UKI: uki.names, ImageFormat.UPDATER: updater.names,
             ImageFormat.ISO: iso.names}
    return [name for fmt in ImageFormat if fmt in recipe.images.formats
            for name in table[fmt](recipe)]


def image_inputs(recipe: Recipe) -> list[Path]:
    """The recipe's files that images read (keys, device trees), for no-op rebuild checks."""
    images = recipe.images
    paths = (images.fit.key, images.fit.dtb, images.uki.secureboot_key,
             images.uki.secureboot_cert, images.updater.key)
    return [p for p in paths if p is not None]


def start_early(recipe: Recipe, epoch: int,
                pool: Executor) -> dict[ImageFormat, Future[BootLoaders]]:
    """Start, on ``pool``, what the recipe's images need of neither the kernel nor the
    initramfs: GRUB's core images and the FAT images holding them (tools, mostly waiting), for
    a build to make while it assembles the initramfs on its one busy core. Pass the result
    as ``ImageContext.early``."""
    from builder.images import iso, updater

    makers = {ImageFormat.ISO: iso.make_boot_loaders, ImageFormat.UPDATER: updater.make_boot_loaders}
    return {fmt: pool.submit(make, recipe, epoch) for fmt, make in makers.items()
            if fmt in recipe.images.formats}


def make_images(recipe: Recipe, staging: Path, context: ImageContext, jobs: int = 1) -> list[str]:
    """Build every format the recipe asks for into ``staging``, all at once (each mostly
    waits on tools or on compression, which release the GIL; ``jobs`` bounds that only when
    it is 1); return the files written. The ISO embeds the updater: when both are made, the
    ISO makes the rest of its tree while the updater is written, then waits for it."""
    from builder.images.iso import make_iso

    table = builders()
    wanted = [fmt for fmt in ImageFormat if fmt in recipe.images.formats]
    futures: dict[ImageFormat, Future[list[str]]] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(wanted) if jobs > 1 else 1)) as pool:
        if ImageFormat.UPDATER in wanted:  # first: the ISO may wait for it
            futures[ImageFormat.UPDATER] = pool.submit(table[ImageFormat.UPDATER], recipe,
                                                       staging, context)
        for fmt in wanted:
            if fmt in futures:
                continue
            if fmt is ImageFormat.ISO and ImageFormat.UPDATER in futures:
                futures[fmt] = pool.submit(make_iso, recipe, staging, context,
                                           futures[ImageFormat.UPDATER].result)
            else:
                futures[fmt] = pool.submit(table[fmt], recipe, staging, context)
        written = {fmt: future.result() for fmt, future in futures.items()}
    return [name for fmt in wanted for name in written[fmt]]
