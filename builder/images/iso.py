"""The hybrid ISO recovery image: boots as a CD and as a disk (written with dd), under BIOS and UEFI.

ISO 9660 with El Torito entries for GRUB's BIOS core image and for an EFI system image,
GRUB's hybrid MBR and a GPT/MBR partition exposing the EFI image (xorriso, as grub-mkrescue
does it, but with only the GRUB modules the menu needs built into the core images). The menu
offers install (default), rescue and embed; embed loads a second initramfs holding the
updater, which ``onie-embed`` runs to install the environment onto the switch's disk.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from builder.images.context import BootLoaders, ImageContext
from builder.images.fat import make_vfat
from builder.images.grub import find_grub_dir, make_core, render_marker_config, render_menu
from builder.images.updater import make_updater_file, updater_name
from builder.initramfs.cpio import render_cpio
from builder.initramfs.tree import Tree
from builder.process import find_tool, run
from builder.recipe.formats import ImageFormat
from builder.recipe.model import Recipe

WHY = "to build ISO images"
EMBED_PATH = "/onie-updater"  # where the embed entry's extra initramfs puts the updater


def names(recipe: Recipe) -> list[str]:
    """The file ``make_iso`` writes."""
    return [iso_name(recipe)]


def iso_name(recipe: Recipe) -> str:
    """ONIE's name for the recovery image: ``onie-recovery-<platform>.iso``."""
    return f"onie-recovery-{recipe.platform_string}.iso"


def volume_id(recipe: Recipe) -> str:
    """The ISO volume id: ISO 9660 d-characters, at most 32."""
    return ("ONIE_" + recipe.platform_string.upper().replace("-", "_"))[:32]


def make_iso(recipe: Recipe, staging: Path, context: ImageContext,
             updater_written: Callable[[], object] = lambda: None) -> list[str]:
    """Write ``onie-recovery-<platform>.iso``. When the build publishes an updater too, the
    ISO embeds that one: ``updater_written`` returns once it is in ``staging`` (all else is
    made meanwhile)."""
    xorriso = find_tool("xorriso", f"{WHY} (Debian package xorriso)")
    hybrid_mbr = find_grub_dir("i386-pc", WHY) / "boot_hybrid.img"
    out = staging / iso_name(recipe)
    with tempfile.TemporaryDirectory(prefix="iso-") as tmp:
        root = Path(tmp) / "root"
        boot = root / "boot"
        (boot / "grub").mkdir(parents=True)
        lay_out_files(recipe, staging, context, root, Path(tmp), updater_written)
        date = datetime.datetime.fromtimestamp(context.source_date_epoch, datetime.UTC)
        out.unlink(missing_ok=True)
        run([xorriso, "-as", "mkisofs", "-o", out, "-R", "-V", volume_id(recipe),
             f"--modification-date={date:%Y%m%d%H%M%S}00",
             "--set_all_file_dates", f"{date:%Y%m%d%H%M%S}00",
             "-b", "boot/grub/bios.img", "-no-emul-boot", "-boot-load-size", "4",
             "-boot-info-table", "--grub2-boot-info", "--grub2-mbr", hybrid_mbr,
             "--efi-boot", "boot/grub/efi.img", "-efi-boot-part", "--efi-boot-image",
             "--protective-msdos-label", root], env=context.env)
    return names(recipe)


def lay_out_files(recipe: Recipe, staging: Path, context: ImageContext, root: Path,
                  work: Path, updater_written: Callable[[], object]) -> None:
    """The ISO's tree: GRUB for BIOS and UEFI, the menu, kernel, initramfs, embed archive."""
    grub = root / "boot" / "grub"
    marker = marker_path(recipe)
    (root / marker.lstrip("/")).write_text(f"{recipe.platform_string} {recipe.version}\n")
    loaders = context.boot_loaders(
        ImageFormat.ISO, lambda: make_boot_loaders(recipe, context.source_date_epoch))
    for name, data in loaders.items():
        (grub / name).write_bytes(data)
    shutil.copyfile(context.kernel, root / "boot" / "vmlinuz")
    shutil.copyfile(context.initramfs, root / "boot" / "initrd.img")
    updater_written()
    (root / "boot" / "embed.cpio").write_bytes(make_embed_archive(recipe, staging, context, work))
    menu = render_menu(recipe, {"medium": "ISO", "kernel": "/boot/vmlinuz", "entries": [
        {"title": f"ONIE: {title}", "initrds": initrds,
         "cmdline": [*context.cmdline.split(), f"boot_reason={mode}"]}
        for title, mode, initrds in (
            ("Install OS", "install", ["/boot/initrd.img"]),
            ("Rescue", "rescue", ["/boot/initrd.img"]),
            ("Embed ONIE (install it onto this switch's disk)", "embed",
             ["/boot/initrd.img", "/boot/embed.cpio"]),
            # ONIE's other modes, after those three (their places are known to users and tests).
            ("Uninstall OS (erase the NOS from this switch's disk)", "uninstall", ["/boot/initrd.img"]),
            ("Update ONIE (find an updater for this switch's disk)", "update", ["/boot/initrd.img"]))]})
    (grub / "grub.cfg").write_text(menu)


def marker_path(recipe: Recipe) -> str:
    """The file only this ISO has, by which its core images find it."""
    return f"/boot/onie-{recipe.platform_string}.id"


def make_boot_loaders(recipe: Recipe, epoch: int) -> BootLoaders:
    """GRUB's core images: ``bios.img`` (El Torito) and ``efi.img`` (the FAT image holding
    the UEFI one). They need neither the kernel nor the initramfs, so a build makes them
    while it assembles the tree (``builder.images.start_early``)."""
    early = render_marker_config(marker_path(recipe), "/boot/grub")
    with tempfile.TemporaryDirectory(prefix="iso-boot-") as tmp:
        work = Path(tmp)
        bios = make_core("i386-pc-eltorito", "i386-pc", work / "bios.img", early, "/boot/grub",
                         WHY)
        efi = make_core("x86_64-efi", "x86_64-efi", work / "BOOTX64.EFI", early, "/boot/grub",
                        WHY)
        image = make_vfat(work / "efi.img", {"EFI/BOOT/BOOTX64.EFI": efi}, "ONIE_EFI",
                          f"{recipe.platform_string}:iso-efi", epoch)
        return {"bios.img": bios.read_bytes(), "efi.img": image.read_bytes()}


def make_embed_archive(recipe: Recipe, staging: Path, context: ImageContext, work: Path) -> bytes:
    """An uncompressed cpio with the updater at /onie-updater; GRUB loads it after the initrd."""
    updater = staging / updater_name(recipe)
    if not updater.is_file():  # the recipe does not publish an updater: make one for the ISO
        updater = make_updater_file(recipe, context, work / updater_name(recipe))
    tree = Tree()
    tree.add_file(EMBED_PATH, source=updater, mode=0o755, origin="updater")
    return render_cpio(tree, context.source_date_epoch)
