"""The updater: its script and payload, and on arm64 the whole u-boot flow: the updater run
in a booted environment installs onto a blank disk, then u-boot boots that disk alone.
(The x86_64 install and update are proven in test_images_iso.py.)"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.lab.qemu import Console, machine_for, qemu_command
from tests.conftest import require_qemu, require_tool
from tests.imagelab import UBOOT_ARM64, expect_environment, fat_read, require_file

pytestmark = pytest.mark.network


def split(updater: Path) -> tuple[str, dict[str, bytes]]:
    """The script and the payload's files, checked against the script's own size and digest."""
    data = updater.read_bytes()
    offset = int(re.search(rb"^payload_offset=(\d+)$", data, re.M).group(1))  # type: ignore[union-attr]
    size = int(re.search(rb"^payload_size=(\d+)$", data, re.M).group(1))  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data[offset:offset + size]))) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    return data[:offset].decode(), files


def layout(files: dict[str, bytes], sectors: int, tmp: Path) -> list[dict[str, object]]:
    """sfdisk's view of the payload's GPT, put back at the start and end of a region."""
    region = tmp / "region.img"
    with region.open("wb") as f:
        f.truncate(sectors * 512)
        f.write(files["head.img"])
        f.seek((sectors - 33) * 512)
        f.write(files["tail.img"])
    table = json.loads(subprocess.run(["sfdisk", "-J", str(region)], capture_output=True,
                                      check=True, text=True).stdout)["partitiontable"]
    return table["partitions"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("platform", ["qemu_x86_64", "qemu_arm64"])
def test_updater_script_and_payload(built: Callable[[str], Path], tmp_path: Path,
                                    platform: str) -> None:
    image = built(platform)
    updater = next(image.glob("onie-updater-*"))
    script, files = split(updater)
    assert script.startswith("#!/bin/sh\n# ONIE-UPDATER-COOKIE\n")
    for shell in (["sh", "-n"], ["busybox", "ash", "-n"]):
        subprocess.run([*shell, "/dev/stdin"], input=script.encode(), check=True)
    sectors = int(re.search(r"^region_sectors=(\d+)$", script, re.M).group(1))  # type: ignore[union-attr]
    parts = {p["name"]: p for p in layout(files, sectors, tmp_path)}
    boot = parts["ONIE-BOOT"]
    assert boot["type"] == "7412F7D5-A156-4B13-81DC-867174929325"
    if platform == "qemu_x86_64":
        # ONIE's layout and attributes; ONIE-BOOT's files travel as files: the updater makes
        # its ext4 file system on the switch and copies them in.
        assert list(parts) == ["GRUB-BOOT", "EFI System", "ONIE-BOOT"]
        for name in ("GRUB-BOOT", "ONIE-BOOT"):
            assert parts[name]["attrs"] == "RequiredPartition GUID:60"
        assert parts["GRUB-BOOT"]["type"] == "21686148-6449-6E6F-744E-656564454649"
        assert "onie-boot.img" not in files and "mkfs.ext4 -q -F -L ONIE-BOOT" in script
        assert files["onie-boot/onie/version"] == b"x86_64-qemu_x86_64-r0 2026.11\n"
        # The kernel and initramfs go into a slot (a on install, the other one on update).
        assert files["onie-boot/onie/slot/version"] == b"x86_64-qemu_x86_64-r0 2026.11\n"
        assert files["onie-boot/onie/slot/vmlinuz"] == (image / "vmlinuz").read_bytes()
        assert files["onie-boot/onie/slot/initrd.img"] == (image / "initrd.img").read_bytes()
        env = files["onie-boot/grub/grubenv"]
        assert len(env) == 1024 and env.startswith(
            b"# GRUB Environment Block\nonie_slot=a\nonie_slot_a=2026.11\n#")
        menu = files["onie-boot/grub/grub.cfg"].decode()
        titles = re.findall(r"^menuentry '([^']+)' --id (\w+)", menu, re.M)
        assert titles == [("ONIE: Install OS", "install"), ("ONIE: Rescue", "rescue"),
                          ("ONIE: Uninstall OS", "uninstall"), ("ONIE: Update ONIE", "update"),
                          ("ONIE: Embed ONIE", "embed")]
        assert re.findall(r'^menuentry "([^"]+)" --id (\w+)', menu, re.M) == [
            ("ONIE: Install OS (previous version $onie_other_version)", "previous")]
        assert menu.count("linux /onie/slot-${onie_run}/vmlinuz ") == 5
        assert "linux /onie/slot-${onie_other}/vmlinuz " in menu
        # What onie-uninstaller writes back: the MBR's boot code and each piece by sector.
        assert files["onie-boot/onie/boot/boot-code.bin"] == files["head.img"][:440]
        assert files["onie-boot/onie/boot/pieces"].decode().splitlines() == [
            f"{parts['GRUB-BOOT']['start']} bios.img.gz GRUB-BOOT",
            f"{parts['EFI System']['start']} esp.img.gz EFI System"]
        assert gzip.decompress(files["onie-boot/onie/boot/esp.img.gz"]) == files["esp.img"]
        assert gzip.decompress(files["onie-boot/onie/boot/bios.img.gz"]) == files["bios.img"]
        assert 'set onie_env="($root)/grub/grubenv"' in menu and 'load_env -f "$onie_env"' in menu
        check = require_tool("grub-script-check", "to check GRUB menus (grub-common)")
        (tmp_path / "disk.cfg").write_text(menu)
        subprocess.run([check, str(tmp_path / "disk.cfg")], check=True)
        # 50_onie_grub prints the entry a NOS appends to its grub.cfg: titled exactly ONIE.
        grub_d = tmp_path / "50_onie_grub"
        grub_d.write_bytes(files["onie-boot/onie/grub.d/50_onie_grub"])
        printed = subprocess.run(["sh", str(grub_d)], capture_output=True, text=True, check=True).stdout
        assert printed.startswith("menuentry ONIE {\n")
        assert "search --no-floppy --label --set=root ONIE-BOOT" in printed
        assert "configfile ($root)/grub/grub.cfg" in printed and "prefix" not in printed
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(
                updater.read_bytes()[len(script.encode()):]))) as tar:
            modes = {m.name: m.mode for m in tar.getmembers()}
        assert modes["onie-boot/onie/grub.d/50_onie_grub"] == 0o755
        assert modes["onie-boot/onie/slot/vmlinuz"] == 0o644
        # GRUB's MBR code points at the core image in GRUB-BOOT.
        assert int.from_bytes(files["head.img"][0x5C:0x64], "little") == parts["GRUB-BOOT"]["start"]
        assert files["bios.img"][:4] != b"\0\0\0\0"
    else:
        assert f"put onie-boot.img {boot['start']}" in script
        (tmp_path / "boot.img").write_bytes(files["onie-boot.img"])
        assert fat_read(tmp_path / "boot.img", 0, "/onie/version").decode() == "arm64-qemu_arm64-r0 2026.11\n"
        assert list(parts) == ["ONIE-BOOT"] and "LegacyBIOSBootable" in str(boot.get("attrs"))
        assert fat_read(tmp_path / "boot.img", 0, "/onie.itb") == (image / "fit" / "onie.itb").read_bytes()


@pytest.mark.lab
def test_arm64_updater_installs_then_uboot_boots_the_disk(built: Callable[[str], Path],
                                                          tmp_path: Path) -> None:
    require_qemu("arm64")
    require_file(UBOOT_ARM64, "u-boot-qemu")
    require_tool("sfdisk", "to read the disk's partition table (fdisk)")
    image = built("qemu_arm64")
    platform = "arm64-qemu_arm64-r0"
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(256 << 20)
    media = tmp_path / "updater.img"
    data = next(image.glob("onie-updater-*")).read_bytes()
    media.write_bytes(data + b"\0" * (-len(data) % (1 << 20)))
    manifest = json.loads((image / "manifest.json").read_text())
    drives = ["-drive", f"file={disk},format=raw,if=virtio",
              "-drive", f"file={media},format=raw,if=virtio,readonly=on"]
    argv = qemu_command(machine_for("arm64"), image / "vmlinuz", image / "initrd.img",
                        manifest["kernel"]["cmdline"] + " boot_reason=rescue", netdev=None,
                        extra=drives)
    with Console.start(argv, tmp_path / "install.log") as console:
        expect_environment(console, platform)
        console.run("killall onie-discovery udhcpc 2>/dev/null; true", timeout=30)
        # A damaged updater is refused before it touches any disk.
        status, text = console.run_status(
            f"head -c {len(data) - 4096} /dev/vdb > /tmp/cut; sh /tmp/cut", timeout=120)
        assert status == 1 and "payload checksum mismatch" in text
        text = console.run("sh /dev/vdb", timeout=240)
        assert f"onie-updater: installing ONIE 2026.11 for {platform} on /dev/vda" in text
        console.run("sync", timeout=30)
    assert shutil.which("sfdisk")
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, check=True,
                                      text=True).stdout)["partitiontable"]["partitions"]
    assert [p["name"] for p in table] == ["ONIE-BOOT"]
    # u-boot's distro boot finds boot.scr.uimg on the bootable partition, loads the FIT.
    argv = [require_qemu("arm64"), "-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg", "-m", "1024",
            "-nographic", "-no-reboot", "-serial", "mon:stdio", "-bios", str(UBOOT_ARM64),
            "-nic", "none", "-drive", f"file={disk},format=raw,if=virtio"]
    with Console.start(argv, tmp_path / "uboot.log") as console:
        console.expect(r"Executing script at", 120)
        console.expect(r"Using '" + platform + "' configuration", 120)
        found = expect_environment(console, platform, timeout=240)
        assert found.group(2) == "install"
