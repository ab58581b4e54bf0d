"""What every image builder gets besides the recipe and the staging folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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

    @property
    def env(self) -> dict[str, str]:
        """The environment for host tools: SOURCE_DATE_EPOCH for every timestamp they write."""
        return {"SOURCE_DATE_EPOCH": str(self.source_date_epoch)}
