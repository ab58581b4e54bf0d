"""The hybrid recovery ISO booted for real: SeaBIOS as a disk (written as with dd), OVMF as a
CD, and SeaBIOS as a CD running the embed entry, which installs the environment onto a blank
disk; that disk then boots without the ISO (BIOS) into update mode, where discovery finds,
verifies and runs a signed updater that updates the disk in place; the updated disk boots
under UEFI with the new version."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.images.fat import make_vfat
from builder.lab.qemu import Console
from builder.signing.keys import KeyType, make_key_pair
from tests.conftest import ROOT, require_tool, run_cli
from tests.imagelab import (
    DISCOVERY,
    choose_grub_entry,
    expect_environment,
    ext4_read,
    ovmf_args,
    partition_bytes,
    x86_command,
)

pytestmark = [pytest.mark.lab, pytest.mark.network]

PLATFORM = "x86_64-qemu_x86_64-r0"
ISO = f"onie-recovery-{PLATFORM}.iso"
UPDATER = f"onie-updater-{PLATFORM}"


@pytest.fixture(scope="module")
def image(built: Callable[[str], Path]) -> Path:
    require_tool("xorriso", "to build ISO images")
    return built("qemu_x86_64")


def partitions(disk: Path) -> dict[str, dict[str, object]]:
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True,
                                      check=True, text=True).stdout)["partitiontable"]
    return {p["name"]: p for p in table["partitions"]}


def test_iso_boots_as_a_usb_disk_under_bios(image: Path, tmp_path: Path) -> None:
    stick = tmp_path / "stick.img"
    stick.write_bytes((image / ISO).read_bytes())  # what `dd if=x.iso of=/dev/sdX` writes
    argv = x86_command("-drive", f"file={stick},format=raw,if=ide", "-nic", "none")
    with Console.start(argv, tmp_path / "console.log") as console:
        choose_grub_entry(console, 1)  # Rescue
        found = expect_environment(console, PLATFORM)
        assert found.group(2) == "rescue"


def test_iso_boots_under_uefi(image: Path, tmp_path: Path) -> None:
    argv = x86_command(*ovmf_args(tmp_path), "-cdrom", str(image / ISO), "-nic", "none")
    with Console.start(argv, tmp_path / "console.log") as console:
        found = expect_environment(console, PLATFORM, timeout=300)
        assert found.group(2) == "install"


def build(recipe: Path, text: str, out: Path, env: dict[str, str]) -> Path:
    recipe.write_text(text)
    proc = run_cli("build", str(recipe), "--out", str(out), "--json", "--no-lock", env=env)
    return Path(json.loads(proc.stdout)[0]["out"])


def test_embed_then_boot_from_disk_then_update(tmp_path: Path, cache_env: dict[str, str]) -> None:
    require_tool("xorriso", "to build ISO images")
    # An environment that trusts the updater key, and a newer updater signed with it.
    make_key_pair(KeyType.ED25519, tmp_path / "updater")
    base = f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
    image = build(tmp_path / "trusting.yaml", base + "trust:\n  keys: [updater.pub]\n"
                  "images:\n  formats: [iso]\n", tmp_path / "out", cache_env)
    newer = build(tmp_path / "newer.yaml", "extends: trusting.yaml\nversion: '2026.12'\n"
                  "images:\n  formats: [updater]\n  updater:\n    key: updater.key\n",
                  tmp_path / "newer", cache_env)
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(256 << 20)
    # 1. Booted as a CD under SeaBIOS, the ISO's embed entry installs the environment onto
    #    the blank disk, then reboots (QEMU exits: -no-reboot).
    argv = x86_command("-cdrom", str(image / ISO), "-drive", f"file={disk},format=raw,if=virtio",
                       "-nic", "none", "-boot", "d")
    with Console.start(argv, tmp_path / "embed.log") as console:
        choose_grub_entry(console, 2)
        console.expect(r"onie-updater: done: ONIE 2026\.11 for " + PLATFORM + " is on /dev/vda", 240)
        console.expect(r"onie-embed: done, reboot", 30)
    parts = partitions(disk)
    assert list(parts) == ["GRUB-BOOT", "EFI System", "ONIE-BOOT"]
    start, size = partition_bytes(parts["ONIE-BOOT"])
    assert ext4_read(disk, start, size, "/onie/version") == f"{PLATFORM} 2026.11\n".encode()
    assert ext4_read(disk, start, size, "/onie/vmlinuz") == (image / "vmlinuz").read_bytes()

    # 2. The disk boots without the ISO (BIOS: GRUB from GRUB-BOOT); its
    #    "Update ONIE" entry starts discovery in update mode, which finds the signed updater on
    #    a USB-style stick, verifies it and runs it: the disk is updated in place.
    stick = make_vfat(tmp_path / "stick.img", {UPDATER: newer / UPDATER}, "UPDATE", "stick",
                      1700000000)
    argv = x86_command("-drive", f"file={disk},format=raw,if=virtio",
                       "-drive", f"file={stick},format=raw,if=virtio,readonly=on", "-nic", "none")
    with Console.start(argv, tmp_path / "disk.log") as console:
        choose_grub_entry(console, 3)  # ONIE: Install OS, Rescue, Uninstall OS, Update ONIE, Embed
        found = expect_environment(console, PLATFORM)
        assert found.group(2) == "update"
        console.expect(r"onie-updater: updating ONIE on /dev/vda to 2026\.12", 240)
        console.expect(f"onie-updater: done: ONIE 2026\\.12 for {PLATFORM} is on /dev/vda", 120)
    assert list(partitions(disk)) == ["GRUB-BOOT", "EFI System", "ONIE-BOOT"]
    assert ext4_read(disk, start, size, "/onie/version") == f"{PLATFORM} 2026.12\n".encode()

    # 3. The updated disk, alone, boots under UEFI too (GRUB from the EFI system partition).
    argv = x86_command(*ovmf_args(tmp_path), "-drive", f"file={disk},format=raw,if=virtio",
                       "-nic", "none")
    with Console.start(argv, tmp_path / "uefi.log") as console:
        banner = console.expect(r"ONIE environment (\S+) for (\S+)\r?\n", 300)
        assert banner.groups() == ("2026.12", PLATFORM)
        console.expect(DISCOVERY, 60)
