"""GRUB for the ISO and the disk: core images made with grub-mkimage, boot sectors, menus.

No grub-install and no loop devices: the BIOS boot code is GRUB's ``boot.img`` patched the
way grub-bios-setup patches it for a core image embedded in a GPT "BIOS boot" partition,
so the disk layout can be written later with plain ``dd`` (see docs/images.md).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from builder.errors import MissingToolError
from builder.process import find_tool, run
from builder.recipe.model import Recipe
from builder.render import make_environment, render_template

GRUB_LIB = Path("/usr/lib/grub")
PACKAGES = {"i386-pc": "grub-pc-bin", "x86_64-efi": "grub-efi-amd64-bin"}

# Everything the menus use is built into the core image: no module folder on the media.
# ext2 reads the disk's ext4 ONIE-BOOT; loadenv its grubenv (the mode onie-boot-mode sets).
COMMON_MODULES = ("part_gpt", "part_msdos", "fat", "iso9660", "ext2", "search", "search_label",
                  "search_fs_file", "normal", "configfile", "linux", "echo", "test", "serial",
                  "terminal", "sleep", "boot", "halt", "reboot", "ls", "cat", "loadenv")
PLATFORM_MODULES = {"i386-pc": ("biosdisk",), "x86_64-efi": ("efi_gop",)}

# Offsets in boot.img and diskboot.img (GRUB's include/grub/i386/pc/boot.h and setup.c).
BOOT_KERNEL_SECTOR = 0x5C  # u64: the LBA of the core image's first sector
BOOT_DRIVE = 0x64  # 0xff: use the drive the BIOS booted from
BOOT_DRIVE_CHECK = 0x66  # a jmp that grub-setup turns into two nops for hard disks
MBR_CODE = 440  # the boot code area; the disk signature and partition table follow
BLOCKLIST = 0x200 - 12  # in diskboot.img: u64 start, u16 length, u16 segment
GRUBENV_SIZE = 1024  # GRUB's environment block is one fixed-size file (grub-editenv)


def find_grub_dir(target: str, why: str) -> Path:
    """The folder of GRUB modules and images for ``target`` (i386-pc, x86_64-efi)."""
    folder = GRUB_LIB / target
    if not (folder / "kernel.img").is_file():
        raise MissingToolError(
            f"Could not find GRUB for {target} in {folder}, which is required {why}",
            hint=f"install the Debian package {PACKAGES[target]}")
    return folder


def make_core(fmt: str, target: str, out: Path, early_config: str, prefix: str, why: str) -> Path:
    """Run grub-mkimage: a core image of format ``fmt`` with an embedded early config."""
    mkimage = find_tool("grub-mkimage", f"{why} (Debian package grub-common)")
    folder = find_grub_dir(target, why)
    config = out.with_name(out.name + ".early.cfg")
    config.write_text(early_config)
    modules = [*COMMON_MODULES, *PLATFORM_MODULES[target]]
    run([mkimage, "-d", folder, "-O", fmt, "-p", prefix, "-c", config, "-o", out, *modules])
    config.unlink()
    return out


def render_early_config(label: str) -> str:
    """The config built into a core image: find the file system by label, load its menu."""
    return (f"search --no-floppy --label {label} --set=root\n"
            "set prefix=($root)/grub\n"
            "configfile $prefix/grub.cfg\n")


def render_marker_config(marker: str, prefix: str) -> str:
    """The config built into the ISO's core images: find the ISO by a file only it has."""
    return (f"search --no-floppy --file {marker} --set=root\n"
            f"set prefix=($root){prefix}\n"
            "configfile $prefix/grub.cfg\n")


def make_boot_code(core_lba: int) -> bytes:
    """The 440 bytes of MBR code that load a core image starting at ``core_lba``."""
    folder = find_grub_dir("i386-pc", "to make disks bootable under BIOS")
    code = bytearray((folder / "boot.img").read_bytes()[:MBR_CODE])
    struct.pack_into("<Q", code, BOOT_KERNEL_SECTOR, core_lba)
    code[BOOT_DRIVE] = 0xFF
    code[BOOT_DRIVE_CHECK : BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    return bytes(code)


def place_core(core: bytes, core_lba: int) -> bytes:
    """The core image with its first blocklist pointing at the sectors after ``core_lba``.

    grub-mkimage fills in the length; the start it leaves assumes LBA 1 (the MBR gap).
    """
    data = bytearray(core)
    _, length, segment = struct.unpack_from("<QHH", data, BLOCKLIST)
    struct.pack_into("<QHH", data, BLOCKLIST, core_lba + 1, length, segment)
    return bytes(data)


def render_grubenv(values: dict[str, str]) -> bytes:
    """A GRUB environment block (what ``grub-editenv FILE create`` writes, then ``set``): a
    header line, ``name=value`` lines, '#' padding to exactly 1024 bytes."""
    head = "# GRUB Environment Block\n" + "".join(f"{k}={v}\n" for k, v in sorted(values.items()))
    if len(head) > GRUBENV_SIZE:
        raise ValueError(f"GRUB environment block over {GRUBENV_SIZE} bytes")
    return (head + "#" * (GRUBENV_SIZE - len(head))).encode()


def serial_unit(recipe: Recipe) -> int | None:
    """The GRUB serial unit for the console (ttyS1 -> 1), or None when not a 16550 port."""
    device = recipe.platform.console.device
    return int(device[4:]) if device.startswith("ttyS") else None


def render_menu(recipe: Recipe, values: dict[str, Any]) -> str:
    """Render ``images/grub.cfg.j2`` with the console, timeout and the given entries."""
    env = make_environment(recipe.templates)
    return render_template(env, "images/grub.cfg.j2", {
        "platform": recipe.platform,
        "version": recipe.version,
        "serial_unit": serial_unit(recipe),
        "speed": recipe.platform.console.speed,
        "timeout": recipe.images.grub_timeout,
        "modes": False,
        "slots": False,
        **values,
    })
