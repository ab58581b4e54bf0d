"""The environment's disk layout: a GPT region at the start of the switch's disk, built as pieces.

The region holds the partitions the environment owns (ONIE's layout, docs/onie-contract.md:
GRUB-BOOT (BIOS boot) and an EFI system partition on x86_64, so one disk boots under BIOS and
UEFI, then ONIE-BOOT); a NOS adds its own partitions after it. The GPT is written by sfdisk
into a sparse file the size of the region, with disk and partition GUIDs derived from the
platform string, so it is the same on every build. Its backup header sits at the end of the
region; the updater moves it to the end of the switch's disk (``sgdisk -e``), because NOS
installers add partitions after the last one and never move it themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from builder.process import find_tool, run

SECTOR = 512
MIB = 2048  # sectors
GPT_TAIL = 33  # sectors: the backup partition entries (32) and header (1)

BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
EFI_SYSTEM = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ONIE_BOOT = "7412F7D5-A156-4B13-81DC-867174929325"  # ONIE's type GUID for ONIE-BOOT
ESP_MIB = 32
# GPT attribute bits ONIE sets (docs/onie-contract.md, "x86 disk layout"): 0 "required by the
# platform" and 60 "read-only"; uninstall keeps partitions by type GUID, so a NOS leaves these.
ONIE_ATTRS = "RequiredPartition,GUID:60"
MSDOS_LINUX = "83"  # msdos partition type: Linux


@dataclass(frozen=True)
class Partition:
    """One partition of the region: GPT name, type GUID, start and size in sectors."""

    name: str
    type_guid: str
    start: int
    size: int
    attrs: str = ""


@dataclass(frozen=True)
class Layout:
    """The region: its partitions and its total size in sectors (backup GPT included), and
    its partition table: "gpt", or "msdos" (no backup table, no partition names)."""

    partitions: tuple[Partition, ...]
    sectors: int
    table: str = "gpt"

    def find(self, name: str) -> Partition:
        """The partition called ``name``."""
        return next(p for p in self.partitions if p.name == name)

    def has(self, name: str) -> bool:
        """True when the layout has a partition called ``name``."""
        return any(p.name == name for p in self.partitions)


def make_layout(arch: str, boot_mib: int, table: str = "gpt") -> Layout:
    """x86_64: GRUB-BOOT, EFI System, ONIE-BOOT; arm64: ONIE-BOOT only (u-boot reads it).
    msdos (x86_64, BIOS): ONIE-BOOT alone as bootable primary partition 1; GRUB's core image
    sits in the gap after the MBR, as ONIE's msdos layout has it."""
    if table == "msdos":
        return Layout((Partition("ONIE-BOOT", MSDOS_LINUX, MIB, boot_mib * MIB, "bootable"),),
                      (1 + boot_mib) * MIB, "msdos")
    parts: list[Partition] = []
    start = MIB
    if arch == "x86_64":
        parts.append(Partition("GRUB-BOOT", BIOS_BOOT, start, MIB, ONIE_ATTRS))
        parts.append(Partition("EFI System", EFI_SYSTEM, 2 * MIB, ESP_MIB * MIB))
        start = (2 + ESP_MIB) * MIB
    # u-boot's distro boot scans the partitions marked bootable (legacy BIOS bootable in GPT).
    attrs = "LegacyBIOSBootable" if arch == "arm64" else ONIE_ATTRS
    parts.append(Partition("ONIE-BOOT", ONIE_BOOT, start, boot_mib * MIB, attrs))
    end = start + boot_mib * MIB
    return Layout(tuple(parts), end + MIB)


def guid(platform: str, what: str) -> str:
    """A GUID derived from the platform string (reproducible, distinct per platform and use)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"onie-builder:{platform}:{what}")).upper()


def render_sfdisk(layout: Layout, platform: str) -> str:
    """The sfdisk script for the region's partition table."""
    if layout.table == "msdos":
        disk_id = guid(platform, "disk")[:8].lower()  # the MBR's 32-bit disk signature
        return "".join(["label: dos\n", f"label-id: 0x{disk_id}\n", "unit: sectors\n",
                        *(f"start={p.start}, size={p.size}, type={p.type_guid}"
                          f"{', bootable' if p.attrs == 'bootable' else ''}\n"
                          for p in layout.partitions)])
    lines = ["label: gpt", f"label-id: {guid(platform, 'disk')}", "unit: sectors",
             f"first-lba: {MIB}", f"last-lba: {layout.sectors - GPT_TAIL - 1}"]
    for p in layout.partitions:
        attrs = f', attrs="{p.attrs}"' if p.attrs else ""
        lines.append(f"start={p.start}, size={p.size}, type={p.type_guid}, "
                     f"uuid={guid(platform, p.name)}, name=\"{p.name}\"{attrs}")
    return "\n".join(lines) + "\n"


def make_gpt(layout: Layout, platform: str, work: Path) -> tuple[bytes, bytes]:
    """Partition a sparse region-sized file; return its first MiB and its backup GPT (empty
    for msdos, which has none)."""
    sfdisk = find_tool("sfdisk", "to partition disk images (Debian package fdisk)")
    image = work / "region.img"
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(layout.sectors * SECTOR)
    run([sfdisk, "--quiet", "--no-reread", "--no-tell-kernel", image],
        input=render_sfdisk(layout, platform).encode())
    with image.open("rb") as f:
        head = f.read(MIB * SECTOR)
        f.seek((layout.sectors - GPT_TAIL) * SECTOR)
        tail = f.read(GPT_TAIL * SECTOR) if layout.table == "gpt" else b""
    image.unlink()
    return head, tail
