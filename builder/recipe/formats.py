"""Choices a recipe makes about its outputs: image formats and initramfs compression.

The recipe model validates them; the initramfs and image stages act on them. They live here,
below both, so that neither stage and the recipe import each other.
"""

from __future__ import annotations

import enum


class ImageFormat(enum.Enum):
    """An output format; the order of the members is the order they are built in."""

    NETBOOT = "netboot"  # kernel + initramfs + iPXE script + GRUB network config
    FIT = "fit"  # u-boot FIT (.itb) + boot script, arm64
    UKI = "uki"  # UEFI unified kernel image, x86_64
    UPDATER = "updater"  # self-extracting installer of the environment onto a disk
    ISO = "iso"  # hybrid ISO (CD and USB, BIOS and UEFI) with an embed entry, x86_64

    @property
    def arches(self) -> tuple[str, ...]:
        """The architectures this format is built for."""
        return {"fit": ("arm64",), "uki": ("x86_64",), "iso": ("x86_64",)}.get(
            self.value, ("x86_64", "arm64"))


class Compression(enum.Enum):
    """How the initramfs is compressed; each one the kernel can decompress at boot."""

    NONE = "none"
    GZIP = "gzip"
    XZ = "xz"
    ZSTD = "zstd"

    @property
    def default_level(self) -> int | None:
        """The level used when a recipe names none (None: no levels)."""
        return _LEVELS[self][0]

    @property
    def levels(self) -> range:
        """The levels this compression accepts."""
        return _LEVELS[self][1]


# xz: presets 6 to 9 differ only in dictionary size, which is pinned to 1 MiB below, so they
# give the same bytes. Preset 6 is ~9% smaller than 1 but ~4x slower; the build caches the
# compressed archive by the digest of the uncompressed one, so only a changed tree pays for it
# (recipes may set initramfs.compression_level). gzip and zstd follow the kernel's scripts/Makefile.lib
# (gzip -n -9, zstd -19); zstd stops at 19 because 20+ widen the window the kernel allocates.
_LEVELS: dict[Compression, tuple[int | None, range]] = {
    Compression.NONE: (None, range(0)),
    Compression.GZIP: (9, range(1, 10)),
    Compression.XZ: (6, range(0, 10)),
    Compression.ZSTD: (19, range(1, 20)),
}
