"""What every image builder gets besides the recipe and the staging folder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from builder.recipe.formats import ImageFormat

BootLoaders = dict[str, bytes]  # a format's boot-loader files by name (builder.images.start_early)


@dataclass(frozen=True)
class ImageContext:
    """What every image builder gets besides the recipe and the staging folder."""

    kernel: Path  # the kernel as published (staging/vmlinuz)
    initramfs: Path  # the compressed initramfs (staging/initrd.img)
    cmdline: str  # console + recipe command line, without boot_reason
    kernel_release: str
    os_release: str  # the environment's /etc/os-release, for the UKI's .osrel
    source_date_epoch: int
    kernel_roots: tuple[Path, ...] = ()  # the unpacked kernel packages, for their dtbs
    # Each format's boot loaders, started before the kernel and initramfs were written
    early: Mapping[ImageFormat, Future[BootLoaders]] = field(default_factory=dict)

    def boot_loaders(self, fmt: ImageFormat, make: Callable[[], BootLoaders]) -> BootLoaders:
        """What ``make`` returns for ``fmt``: made already when the build started it early,
        else made now."""
        future = self.early.get(fmt)
        return future.result() if future is not None else make()

    @property
    def env(self) -> dict[str, str]:
        """The environment for host tools: SOURCE_DATE_EPOCH for every timestamp they write."""
        return {"SOURCE_DATE_EPOCH": str(self.source_date_epoch)}
