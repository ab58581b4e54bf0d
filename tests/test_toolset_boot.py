"""The installer toolset in a booted guest (docs/onie-contract.md, T1-T14).

One boot of the default image, under OVMF so that the guest is a UEFI machine (efivarfs,
efibootmgr, grub-install's default target), in rescue mode so discovery stays quiet, with a blank
virtual disk: every tool of the toolset runs as the real tool from the installers' shell, and
the disk gets ONIE's layout and a NOS partition the way SONiC's installer makes them, with GRUB
for BIOS and for UEFI on it. Then the disk alone is started by SeaBIOS and by OVMF (with the
boot entry efibootmgr wrote): both GRUBs read their grub.cfg, the environment block and find the
partition by label, which shows the pruned module folders are whole. The firmware-only boots
start no Linux (a few seconds each).
"""

from __future__ import annotations

import base64
import io
import json
import posixpath
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.initramfs.applets import PATH_DIRS
from builder.lab.qemu import Console
from builder.recipe.load import load_recipe
from tests.conftest import ROOT
from tests.imagelab import ovmf_args, x86_command

pytestmark = [pytest.mark.lab, pytest.mark.network]

BOOT_TIMEOUT = 300.0
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# What each tool prints for --version (or -V): the real program, never a BusyBox applet.
VERSIONS = {
    "partprobe --version": "(GNU parted)", "blkid --version": "from util-linux",
    "mount --version": "from util-linux", "fdisk --version": "from util-linux",
    "sfdisk --version": "from util-linux", "mkfs.ext4 -V 2>&1": "mke2fs 1.4",
    "sgdisk --version": "GPT fdisk (sgdisk)", "grub-install --version": "(GRUB) 2.",
    "grub-editenv --version": "(GRUB) 2.", "efibootmgr --version": "version",
}


def toolset_programs() -> dict[str, str]:
    """Each toolset program found in PATH, by name: the toolset entry it comes from."""
    recipe = load_recipe(ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml")[0]
    return {posixpath.basename(b): name for name, c in recipe.initramfs.tools
            for b in c.binaries if posixpath.dirname(c.dest or b) in PATH_DIRS}


def test_toolset_installs_grub_for_bios_and_uefi(built: Callable[[str], Path], tmp_path: Path) -> None:
    image = built("qemu_x86_64")
    manifest = json.loads((image / "manifest.json").read_text())
    files = {f["path"]: f for f in manifest["initramfs"]["files"]}
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(512 << 20)
    firmware = ovmf_args(tmp_path)  # the varstore copy keeps the boot entry for the disk boot
    drive = ["-drive", f"file={disk},if=virtio,format=raw"]
    argv = x86_command(*firmware, "-kernel", str(image / "vmlinuz"), "-initrd",
                       str(image / "initrd.img"), "-append",
                       f"{manifest['kernel']['cmdline']} boot_reason=rescue", *drive)
    token = secrets.token_hex(4)
    with Console.start(argv, log_path=tmp_path / "console.log") as console:
        console.expect(r"ONIE:/ # ", BOOT_TIMEOUT)
        check_real_tools(console, files)
        check_archive_tools(console)
        install_nos_disk(console, token)
    for name, args, platform in (("bios", ["-M", "q35"], "pc"), ("uefi", firmware, "efi")):
        with Console.start(x86_command(*args, *drive), log_path=tmp_path / f"{name}.log") as grub:
            said = grub.expect(r"GRUB-OK platform=(\S+) env=(\S+) found=(\S+)\r?\n", 120)
            assert said.groups() == (platform, token, "hd0,gpt4"), name


def check_real_tools(console: Console, files: dict[str, dict[str, str]]) -> None:
    """Every toolset program, as the installers' shell, env and xargs find it, is the real one."""
    assert files["/bin/sh"]["target"] == "/usr/lib/onie/busybox"
    assert "efivarfs on /sys/firmware/efi/efivars" in console.run("mount")
    programs = toolset_programs()
    found = console.run(f"for t in {' '.join(programs)}; do echo $t $(readlink -f $(command -v $t)); done")
    for line in found.splitlines():
        name, path = line.split()
        assert files[path]["type"] == "file" and files[path]["component"] == programs[name], line
    assert len(found.splitlines()) == len(programs)
    for command, says in VERSIONS.items():
        for shell in ("sh -c", "ash -c", "env sh -c"):
            assert says in console.run(f"{shell} '{command}' | head -n 1"), (shell, command)
    # busybox-static's env and xargs would run their own applet; the links are the dynamic one's.
    assert "(GNU parted)" in console.run("env partprobe --version")
    assert "from util-linux" in console.run("echo --version | xargs blkid")


def check_archive_tools(console: Console) -> None:
    """The BusyBox applets SONiC's archive header uses, with its flags (T13, T14)."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fs.squashfs", "squash\n")
        archive.writestr("dockerfs.tar.gz", "docker\n")
    console.run(f"echo {base64.b64encode(data.getvalue()).decode()} | base64 -d > /tmp/fs.zip")
    assert console.run("unzip -op /tmp/fs.zip fs.squashfs") == "squash"
    console.run("mkdir /tmp/u && unzip -o /tmp/fs.zip -x dockerfs.tar.gz -d /tmp/u")
    assert console.run("ls /tmp/u") == "fs.squashfs"
    assert console.run("tar -cf - -C /tmp/u . | tar --to-stdout -xf - ./fs.squashfs") == "squash"
    assert console.run("d=$(mktemp -d) && mkfifo -m 600 $d/f && realpath $d/f").startswith("/tmp/")
    assert console.run("seq 8 | wc -l; date -u +%Y%m%d | grep -Eo '^[0-9]{8}$' | wc -l") == "8\n1"
    assert console.run("echo x | sha1sum").startswith("6fcf9dfb")  # sha1 of "x\n"


def install_nos_disk(console: Console, token: str) -> None:
    """ONIE's GPT layout, then a NOS partition, file system, GRUB and boot entry as SONiC's
    installer makes them (docs/onie-contract.md, "SONiC's installer, step by step")."""

    def run(command: str, timeout: float = 120) -> str:  # disk writes are slow under TCG
        return console.run(command, timeout)

    run("sgdisk --zap-all /dev/vda > /dev/null; sgdisk --new=1::+1M --typecode=1:EF02 "
        "--change-name=1:GRUB-BOOT /dev/vda")
    run(f"sgdisk --new=2::+64M --typecode=2:{ESP_TYPE} --change-name=2:EFI-System /dev/vda")
    run("sgdisk --new=3::+128M --change-name=3:ONIE-BOOT /dev/vda && partprobe /dev/vda")
    run("mkfs.vfat -n EFI-SYSTEM /dev/vda2 && mkfs.ext4 -q -F -L ONIE-BOOT /dev/vda3")
    assert run("blkid -L ONIE-BOOT") == "/dev/vda3"
    assert ESP_TYPE in run("sgdisk -i 2 /dev/vda")
    # SONiC adds its partition while ONIE-BOOT is mounted, and formats it without -F.
    run("mkdir -p /mnt/onie-boot /mnt/nos /boot/efi && mount /dev/vda3 /mnt/onie-boot")
    run("sgdisk --new=4::+64MB --attributes=4:=:0x0 --change-name=4:SONiC-OS /dev/vda")
    run("partprobe /dev/vda && grep -q 'vda4$' /proc/partitions")
    run("mkfs.ext4 -q -L SONiC-OS /dev/vda4 && mount -t ext4 -o defaults,rw /dev/vda4 /mnt/nos")
    uuid = run("blkid -s UUID -o value /dev/vda4")
    assert len(uuid) == 36 and run("grub-probe --target=fs_uuid /mnt/nos") == uuid
    said = run("grub-install --target=i386-pc --boot-directory=/mnt/nos --recheck /dev/vda 2>&1",
               timeout=180)
    assert "Installation finished. No error reported." in said
    run("mount /dev/vda2 /boot/efi")
    # SONiC's UEFI call names no target: under UEFI the default is x86_64-efi.
    said = run("grub-install --no-nvram --bootloader-id=SONiC-OS --efi-directory=/boot/efi "
               "--boot-directory=/mnt/nos --recheck /dev/vda 2>&1", timeout=180)
    assert "Installing for x86_64-efi platform." in said and "No error reported." in said
    assert run("ls /boot/efi/EFI/SONiC-OS") == "grubx64.efi"
    run("efibootmgr --quiet --create --label SONiC-OS --disk /dev/vda --part 2 "
        "--loader /EFI/SONiC-OS/grubx64.efi")
    entries = run("efibootmgr")
    number = next(line[4:8] for line in entries.splitlines() if line.endswith("* SONiC-OS"))
    assert f"BootOrder: {number}" in entries
    assert run("efivar -l | grep -c 'SecureBoot$'") == "1"
    run(f"grub-editenv /mnt/nos/grub/grubenv create && grub-editenv /mnt/nos/grub/grubenv "
        f"set probe={token}")
    assert run("grub-editenv /mnt/nos/grub/grubenv list") == f"probe={token}"
    cfg = ("serial --unit=0 --speed=115200", "terminal_input serial; terminal_output serial",
           "load_env", "search --no-floppy --label --set=found SONiC-OS",
           "echo GRUB-OK platform=$grub_platform env=$probe found=$found", "halt")
    for i, line in enumerate(cfg):
        run(f"echo '{line}' {'>>' if i else '>'} /mnt/nos/grub/grub.cfg")
    core = "/mnt/nos/grub/i386-pc/core.img"
    run(f"chattr +i {core} && ! rm -f {core} 2> /dev/null && chattr -i {core}")
    assert run("fuser -m /mnt/nos; echo $?") == "1"  # nothing holds it open
    run("umount /mnt/nos /boot/efi /mnt/onie-boot && sync")
