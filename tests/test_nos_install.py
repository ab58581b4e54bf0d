"""ONIE's runtime contract end to end (#15): a NOS installer written like a real one installs
onto the disk of a QEMU guest whose environment was embedded on that disk first; the disk then
boots the NOS, and its ONIE entry (from 50_onie_grub) boots back into the environment. Under
SeaBIOS and under OVMF.

Per firmware, five boots of one disk: the ISO's embed entry lays the environment out (GPT
sized for the whole disk); the disk boots the environment, whose discovery finds the NOS
installer by DHCP option 114 in the test's namespace and runs it (a NOS partition and a
diagnostics one); the disk boots the NOS by default; the NOS's menu entry "ONIE" opens the
environment's menu, whose "Uninstall OS" entry erases the NOS (#17) and reboots; the disk then
boots the environment's GRUB in install mode.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console
from builder.lab.servers import Dnsmasq, HttpServer
from tests.conftest import require_root_netns, require_tool, run_cli
from tests.imagelab import (
    choose_grub_entry,
    expect_environment,
    ext4_read,
    ovmf_args,
    partition_bytes,
    subnet,
    x86_command,
)
from tests.nos import nos_installer

pytestmark = [pytest.mark.lab, pytest.mark.network]

RECIPES = Path(__file__).resolve().parent / "recipes"
PLATFORM = "x86_64-qemu_x86_64-r0"
ISO = f"onie-recovery-{PLATFORM}.iso"
DISK_MIB = 1024
SECTORS = DISK_MIB * 2048


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Callable[[str], Path]:
    """Each partition table's lab image, built once: lab_x86_64 (gpt), msdos_x86_64."""
    require_tool("xorriso", "to build ISO images")
    built: dict[str, Path] = {}

    def build(table: str) -> Path:
        if table not in built:
            recipe = RECIPES / ("lab_x86_64.yaml" if table == "gpt" else "msdos_x86_64.yaml")
            out = tmp_path_factory.mktemp(f"nos-out-{table}")
            proc = run_cli("build", "--allow-untrusted",
                           str(recipe), "--out", str(out), "--json", "--no-lock", env=cache_env)
            built[table] = Path(json.loads(proc.stdout)["result"][0]["out"])
        return built[table]

    return build


@pytest.fixture
def namespace() -> Iterator[NetNamespace]:
    require_root_netns()
    require_tool("dnsmasq", "for the lab's DHCP server (dnsmasq-base)")
    with NetNamespace.create("obn") as ns:
        yield ns


def partition_table(disk: Path) -> dict[str, Any]:
    return json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True,  # type: ignore[no-any-return]
                                     check=True, text=True).stdout)["partitiontable"]


def partitions(disk: Path) -> dict[str, dict[str, object]]:
    return {p["name"]: p for p in partition_table(disk)["partitions"]}


def backup_gpt_lba(disk: Path) -> int:
    """The primary GPT header's "alternate LBA" field: where the backup header is."""
    with disk.open("rb") as f:
        f.seek(512)
        header = f.read(92)
    assert header[:8] == b"EFI PART"
    return int.from_bytes(header[32:40], "little")


def firmware_args(firmware: str, tmp: Path) -> list[str]:
    return ovmf_args(tmp) if firmware == "uefi" else []


@pytest.mark.parametrize(("firmware", "table"), [("bios", "gpt"), ("uefi", "gpt"), ("bios", "msdos")])
def test_nos_installer_installs_and_both_boot(images: Callable[[str], Path], namespace: NetNamespace,
                                              tmp_path: Path, firmware: str, table: str) -> None:
    require_tool("sgdisk", "to check the disk's GPT (Debian package gdisk)")
    require_tool("debugfs", "to read the disk's ONIE-BOOT (Debian package e2fsprogs)")
    image = images(table)
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(DISK_MIB << 20)
    fw = firmware_args(firmware, tmp_path)
    drive = ["-drive", f"file={disk},format=raw,if=virtio"]
    # Booting the disk: bootindex puts it first (with a NIC, OVMF's own order tries its shell
    # before a virtio disk).
    disk_boot = ["-drive", f"file={disk},format=raw,if=none,id=d0",
                 "-device", "virtio-blk-pci,drive=d0,bootindex=1"]

    # 1. The ISO's embed entry lays the environment out on the blank disk.
    argv = x86_command(*fw, "-cdrom", str(image / ISO), *drive, "-nic", "none", "-boot", "d")
    with Console.start(argv, tmp_path / "embed.log") as console:
        choose_grub_entry(console, 2)
        console.expect(f"onie-updater: done: ONIE 2026\\.11 for {PLATFORM} is on /dev/vda", 300)
        console.expect(r"onie-embed: done, poweroff", 60)
        assert console.proc.wait(60) == 0
    if table == "gpt":
        parts = partitions(disk)
        assert list(parts) == ["GRUB-BOOT", "EFI System", "ONIE-BOOT"]
        assert backup_gpt_lba(disk) == SECTORS - 1  # moved to the end of the disk
        boot = parts["ONIE-BOOT"]
    else:  # ONIE's msdos layout: ONIE-BOOT is the bootable primary partition 1
        layout = partition_table(disk)
        assert layout["label"] == "dos"
        [boot] = layout["partitions"]
        assert (boot["start"], boot["type"], boot.get("bootable")) == (2048, "83", True)
    start, size = partition_bytes(boot)
    assert ext4_read(disk, start, size, "/onie/version") == f"{PLATFORM} 2026.11\n".encode()
    assert ext4_read(disk, start, size, "/onie/slot-a/vmlinuz") == (image / "vmlinuz").read_bytes()
    assert ext4_read(disk, start, size, "/grub/grubenv").startswith(b"# GRUB Environment Block\n")
    assert ext4_read(disk, start, size, "/onie/grub.d/50_onie_grub").startswith(b"#!/bin/sh\n")
    machine = ext4_read(disk, start, size, "/onie/grub/grub-machine.cfg").decode()
    assert re.search(f'^onie_platform="?{PLATFORM}"?\nexport onie_platform$', machine, re.M), machine
    assert ext4_read(disk, start, size, "/onie/grub/grub-extra.cfg") == b""

    # 2. The disk boots the environment (install mode by default); discovery finds the NOS
    #    installer by option 114 and runs it.
    net = subnet()
    namespace.add_tap("tap0", f"{net}.1/24")
    www = tmp_path / "www"
    nos_installer(www / "nos-installer.bin", image / "vmlinuz", "nos")
    web = HttpServer(namespace, www, tmp_path / "httpd", address=f"{net}.1").start()
    Dnsmasq(namespace, "tap0", f"{net}.1", tmp_path / "dnsmasq",
            options=[f"114,{web.url('nos-installer.bin')}"]).start()
    nic = ["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
           "-device", "virtio-net-pci,netdev=n0,romfile="]
    argv = x86_command(*fw, *disk_boot, *nic)
    with Console.start(argv, tmp_path / "install.log", netns=namespace.name) as console:
        found = expect_environment(console, PLATFORM, 300)
        assert found.group(2) == "install"
        uefi = "uefi" if firmware == "uefi" else "bios"
        console.expect(f"NOS-INSTALLER nos: platform {PLATFORM} firmware {uefi}", 240)
        number = 4 if table == "gpt" else 2
        console.expect(f"NOS-INSTALLER nos: ONIE-BOOT is /dev/vda{number - 1} on /dev/vda", 30)
        console.expect(f"NOS-INSTALLER nos: partition {number} \\(/dev/vda{number}\\) ready on {table}",
                       120)
        console.expect(r"NOS-INSTALLER nos: installed", 240)
        console.expect(r"reboot: Power down", 120)
        assert console.proc.wait(60) == 0
    installed = partition_table(disk)["partitions"]
    if table == "gpt":
        assert [p["name"] for p in installed] == ["GRUB-BOOT", "EFI System", "ONIE-BOOT", "NOS-ROOT",
                                                  "NOS-DIAG"]
        assert "Attribute flags: 0000000000000001" in sgdisk("-i", "5", disk)
        assert "No problems found" in sgdisk("-v", disk)
    else:
        assert [p["type"] for p in installed] == ["83", "83", "83"]
    nos, diag = installed[-2:]

    # 3. The disk boots the NOS by default.
    with Console.start(x86_command(*fw, *disk_boot, "-nic", "none"), tmp_path / "nos.log") as console:
        console.expect(r"TEST-NOS nos booted: ", 300)
        assert console.proc.wait(120) == 0

    # 4. The NOS's "ONIE" entry (what 50_onie_grub printed) opens the environment's menu,
    #    whose default is install mode; its "Uninstall OS" entry erases the NOS and reboots.
    #    One firmware's disk passes guest discards to the image file (QEMU's discard=unmap):
    #    the others ignore them (QEMU's default), so the uninstaller overwrites.
    unmap = firmware == "bios" and table == "gpt"
    drive_options = ",discard=unmap" if unmap else ""
    uninstall_boot = ["-drive", f"file={disk},format=raw,if=none,id=d0{drive_options}",
                      "-device", "virtio-blk-pci,drive=d0,bootindex=1"]
    argv = x86_command(*fw, *uninstall_boot, "-nic", "none")
    with Console.start(argv, tmp_path / "uninstall.log") as console:
        choose_grub_entry(console, 1)
        # The environment's menu (its help text comes before its entries): Install OS, Rescue,
        # Uninstall OS, Update ONIE, Embed ONIE.
        choose_grub_entry(console, 2)
        console.expect(r"ONIE: Uninstall OS", 60)
        console.expect(f"ONIE environment \\S+ for {PLATFORM}", 300)
        console.expect(f"onie-uninstaller: uninstalling: erasing every partition of /dev/vda \\({table}\\)",
                       120)
        nos_part = f"vda{len(installed) - 1}"  # sfdisk -J names the image file's partitions
        console.expect(f"onie-uninstaller: {nos_part} \\(NOS-ROOT, 64 MiB\\): erasing", 60)
        how = console.expect(f"onie-uninstaller: {nos_part}: erased by (\\S+) and deleted", 300).group(1)
        assert how == "discard" if unmap else how.endswith("overwrite"), how
        console.expect(r"onie-uninstaller: boot loader: ONIE's boot code in the MBR", 60)
        if firmware == "uefi":  # the NOS's NVRAM entry (grub-install --bootloader-id=testnos)
            console.expect(r"onie-uninstaller: NVRAM: deleted boot entry [0-9A-F]{4} "
                           r"\(\\efi\\testnos\\grubx64\.efi on this disk's ESP\)", 60)
        console.expect(r"onie-uninstaller: boot mode: install; NOS mode cleared", 60)
        erased = f"onie-uninstaller:   erased /dev/{nos_part} NOS-ROOT \\(64 MiB\\) by {re.escape(how)}"
        console.expect(erased, 30)
        console.expect(f"onie-uninstaller:   kept   /dev/vda{len(installed)} NOS-DIAG: diagnostics", 30)
        console.expect(r"onie-uninstaller: done, rebooting", 60)
        console.expect(r"reboot: Restarting system", 60)
        assert console.proc.wait(60) == 0
    check_uninstalled(disk, table, installed, nos, diag)

    # 5. The disk boots ONIE's GRUB again, in install mode: discovery starts.
    with Console.start(x86_command(*fw, *disk_boot, "-nic", "none"), tmp_path / "after.log") as console:
        console.expect(r"ONIE: Install OS", 120)
        found = expect_environment(console, PLATFORM, 300)
        assert found.group(2) == "install"
    assert os.path.getsize(disk) == DISK_MIB << 20


def sgdisk(*args: str | Path) -> str:
    return subprocess.run(["sgdisk", *map(str, args)], capture_output=True, check=True, text=True).stdout


def check_uninstalled(disk: Path, table: str, installed: list[dict[str, Any]], nos: dict[str, Any],
                      diag: dict[str, Any]) -> None:
    """Only the environment's partitions and the diagnostics one are left, the diagnostics'
    content intact; the NOS partition's former bytes are zeros; the MBR holds ONIE's boot code
    and ONIE-BOOT's grubenv says install mode, no NOS."""
    left = partition_table(disk)["partitions"]
    assert [(p["start"], p["size"]) for p in left] == [
        (p["start"], p["size"]) for p in installed if p is not nos]
    if table == "gpt":
        assert [p["name"] for p in left] == ["GRUB-BOOT", "EFI System", "ONIE-BOOT", "NOS-DIAG"]
        assert "No problems found" in sgdisk("-v", disk)
    assert ext4_read(disk, *partition_bytes(diag), "/diag.txt") == b"diagnostics of nos\n"
    start, size = partition_bytes(nos)
    with disk.open("rb") as f:
        f.seek(start)
        former = f.read(size)
    assert former.count(0) == size, "the NOS partition's former bytes are not all zeros"
    boot = partition_bytes(installed[-3])
    with disk.open("rb") as f:
        assert f.read(440) == ext4_read(disk, *boot, "/onie/boot/boot-code.bin")
    grubenv = ext4_read(disk, *boot, "/grub/grubenv").decode()
    assert "onie_mode=install\n" in grubenv and "onie_nos_mode" not in grubenv, grubenv
