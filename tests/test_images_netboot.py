"""The network-boot bundle: its files, GRUB's own syntax check of every generated menu, and two
real PXE boots in a lab namespace under SeaBIOS: iPXE running boot.ipxe, and GRUB (a
grub-mknetdir tree) running the bundle's grub.cfg, both over TFTP from dnsmasq."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console
from builder.lab.servers import Dnsmasq
from tests.conftest import digest, require_root_netns, require_tool
from tests.imagelab import expect_environment, subnet, x86_command

pytestmark = pytest.mark.network

PLATFORM = "x86_64-qemu_x86_64-r0"


def test_netboot_bundle(built: Callable[[str], Path]) -> None:
    image = built("qemu_x86_64")
    folder = image / "netboot"
    assert sorted(p.name for p in folder.iterdir()) == ["boot.ipxe", "grub.cfg", "initrd.img",
                                                       "vmlinuz"]
    assert digest(folder / "vmlinuz") == digest(image / "vmlinuz")
    script = (folder / "boot.ipxe").read_text().splitlines()
    assert script[0] == "#!ipxe"
    assert "kernel vmlinuz initrd=initrd.img console=ttyS0,115200 quiet boot_reason=install" in script
    assert "initrd initrd.img" in script and script[-1] == "boot"
    arm = built("qemu_arm64") / "netboot" / "boot.ipxe"
    assert "console=ttyAMA0,115200" in arm.read_text()


def test_grub_menus_pass_grub_script_check(built: Callable[[str], Path], tmp_path: Path) -> None:
    check = require_tool("grub-script-check", "to check GRUB menus (Debian package grub-common)")
    image = built("qemu_x86_64")
    menus = {"netboot": (image / "netboot" / "grub.cfg").read_text()}
    iso = image / f"onie-recovery-{PLATFORM}.iso"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract",
                    "/boot/grub/grub.cfg", str(tmp_path / "iso.cfg")], check=True, capture_output=True)
    menus["iso"] = (tmp_path / "iso.cfg").read_text()
    for name, text in menus.items():
        (tmp_path / f"{name}.cfg").write_text(text)
        subprocess.run([check, str(tmp_path / f"{name}.cfg")], check=True)
    # ONIE's five modes (#17): install, rescue and embed first, as they were.
    assert re.findall(r"boot_reason=(\w+)", menus["iso"]) == [
        "install", "rescue", "embed", "uninstall", "update"]
    assert menus["iso"].count("menuentry ") == 5
    assert "initrd /boot/initrd.img /boot/embed.cpio" in menus["iso"]


@pytest.mark.lab
@pytest.mark.parametrize("loader", ["ipxe", "grub"])
def test_pxe_boot(built: Callable[[str], Path], tmp_path: Path, loader: str) -> None:
    require_root_netns()
    bundle = built("qemu_x86_64") / "netboot"
    tftp = tmp_path / "tftp"
    if loader == "ipxe":
        shutil.copytree(bundle, tftp)
        boot_file = "boot.ipxe"
    else:
        mknetdir = require_tool("grub-mknetdir", "to make a GRUB PXE tree (grub-common)")
        subprocess.run([mknetdir, f"--net-directory={tftp}", "--subdir=boot/grub",
                        "-d", "/usr/lib/grub/i386-pc"], check=True, capture_output=True)
        for item in bundle.iterdir():  # the bundle goes where GRUB's prefix points
            shutil.copyfile(item, tftp / "boot" / "grub" / item.name)
        boot_file = "boot/grub/i386-pc/core.0"
    net = subnet()
    with NetNamespace.create("obpxe") as ns:
        ns.add_tap("tap0", f"{net}.1/24")
        Dnsmasq(ns, "tap0", f"{net}.1", tmp_path / "dnsmasq", tftp_root=tftp,
                extra=[f"--dhcp-boot={boot_file},,{net}.1"]).start()
        argv = x86_command("-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                           "-device", "e1000,netdev=n0", "-boot", "n")
        with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
            if loader == "grub":
                console.expect(r"Use the .* keys to select", 180)
                console.send("\r")
            found = expect_environment(console, PLATFORM, timeout=300)
            assert found.group(2) == "install"
