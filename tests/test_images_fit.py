"""The u-boot FIT: its structure, reproducibility, and u-boot in qemu-system-aarch64 booting it
from TFTP in a lab namespace; with the public key in u-boot's control DTB, an unsigned and a
tampered FIT are refused and the signed one boots the environment."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console
from builder.lab.servers import Dnsmasq
from tests.conftest import ROOT, require_qemu, require_root_netns, require_tool, run_cli
from tests.imagelab import UBOOT_ARM64, expect_environment, require_file, subnet

pytestmark = [pytest.mark.network]

PLATFORM = "arm64-qemu_arm64-r0"
SCRIPT_ADDR = "0x40300000"  # where the test's wrapper script loads the product's boot script


def dumpimage(itb: Path) -> str:
    return subprocess.run(["dumpimage", "-l", str(itb)], capture_output=True, text=True,
                          check=True).stdout


def test_fit_structure(built: Callable[[str], Path]) -> None:
    require_tool("dumpimage", "to read FIT images (Debian package u-boot-tools)")
    fit = built("qemu_arm64") / "fit"
    listing = dumpimage(fit / "onie.itb")
    assert f"Default Configuration: '{PLATFORM}'" in listing
    assert "Compression:  gzip compressed" in listing and "Type:         RAMDisk Image" in listing
    assert listing.count("Hash algo:    sha256") == 2
    assert "Sign algo" not in listing  # the shipped recipe gives no key
    script = (fit / "boot.scr.uimg").read_bytes()
    assert b"bootm ${onie_fit_addr}#" + PLATFORM.encode() in script
    assert b"boot_reason=install" in script


def uboot_argv(ctrl_dtb: Path | None, *extra: str) -> list[str]:
    argv = [require_qemu("arm64"), "-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg", "-m", "1024",
            "-nographic", "-no-reboot", "-serial", "mon:stdio", "-bios", str(UBOOT_ARM64)]
    return argv + (["-dtb", str(ctrl_dtb)] if ctrl_dtb else []) + list(extra)


def make_key(keydir: Path) -> Path:
    keydir.mkdir()
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                    "-days", "3650", "-subj", "/CN=onie-builder FIT test", "-keyout",
                    str(keydir / "dev.key"), "-out", str(keydir / "dev.crt")],
                   check=True, capture_output=True)
    return keydir / "dev.key"


@pytest.mark.lab
def test_signed_fit_over_tftp_in_uboot(built: Callable[[str], Path], tmp_path: Path,
                                       cache_env: dict[str, str]) -> None:
    require_root_netns()
    require_file(UBOOT_ARM64, "u-boot-qemu")
    mkimage = require_tool("mkimage", "to put the public key into u-boot's DTB (u-boot-tools)")
    key = make_key(tmp_path / "keys")
    recipe = tmp_path / "signed.yaml"
    recipe.write_text(f"extends: {ROOT}/recipes/platforms/qemu_arm64.yaml\n"
                      f"images:\n  formats: [fit]\n  fit:\n    key: {key}\n")
    out = Path(json.loads(run_cli("build", "--allow-untrusted",
                                  str(recipe), "--out", str(tmp_path / "out"), "--json",
                                  "--no-lock", env=cache_env).stdout)["result"][0]["out"]) / "fit"
    listing = dumpimage(out / "onie.itb")
    assert "Sign algo:    sha256,rsa2048:dev" in listing

    # u-boot's control DTB as QEMU hands it over (same options, -bios included), plus our key.
    ctrl = tmp_path / "ctrl.dtb"
    subprocess.run(uboot_argv(None, "-M", f"virt,dumpdtb={ctrl}", "-nic", "none"), check=True,
                   capture_output=True)
    scratch = tmp_path / "scratch.itb"
    scratch.write_bytes((out / "onie.itb").read_bytes())
    subprocess.run([mkimage, "-F", "-k", str(key.parent), "-K", str(ctrl), "-r", str(scratch)],
                   check=True, capture_output=True)

    tftp = tmp_path / "tftp"
    tftp.mkdir()
    (tftp / "onie.itb").write_bytes((out / "onie.itb").read_bytes())
    (tftp / "onie.scr").write_bytes((out / "boot.scr.uimg").read_bytes())
    (tftp / "unsigned.itb").write_bytes((built("qemu_arm64") / "fit" / "onie.itb").read_bytes())
    tampered = bytearray((out / "onie.itb").read_bytes())
    tampered[len(tampered) // 2] ^= 0x01  # inside the kernel's data
    (tftp / "tampered.itb").write_bytes(bytes(tampered))
    # The script u-boot's dhcp boot fetches: run the product's script on each FIT in turn.
    wrapper = tmp_path / "wrapper.cmd"
    wrapper.write_text(f"tftpboot {SCRIPT_ADDR} onie.scr\n" + "".join(
        f"setenv onie_fit {name}\nsource {SCRIPT_ADDR}\n"
        for name in ("unsigned.itb", "tampered.itb", "onie.itb")))
    subprocess.run([mkimage, "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-d",
                    str(wrapper), str(tftp / "boot.scr.uimg")], check=True, capture_output=True)

    net = subnet()
    with NetNamespace.create("obfit") as ns:
        ns.add_tap("tap0", f"{net}.1/24")
        Dnsmasq(ns, "tap0", f"{net}.1", tmp_path / "dnsmasq", tftp_root=tftp,
                extra=[f"--dhcp-boot=boot.scr.uimg,,{net}.1"]).start()
        argv = uboot_argv(ctrl, "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                          "-device", "virtio-net-pci,netdev=n0")
        with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
            console.expect(r"onie: booting unsigned\.itb failed", 180)
            console.expect(r"onie: booting tampered\.itb failed", 120)
            console.expect(r"Verifying Hash Integrity \.\.\. sha256,rsa2048:dev\+ OK", 120)
            found = expect_environment(console, PLATFORM, timeout=240)
            assert found.group(2) == "install"
            assert "aarch64" in console.run("uname -m", timeout=30).splitlines()
        log = console.transcript
        unsigned = log[log.index("Filename 'unsigned.itb'"):log.index("booting unsigned.itb failed")]
        assert "Failed to verify required signature" in unsigned or "Verification failed" in unsigned
        broken = log[log.index("Filename 'tampered.itb'"):log.index("booting tampered.itb failed")]
        assert "Bad hash value" in broken or "Verification failed" in broken


def test_fit_with_a_device_tree_from_the_kernel_package(built: Callable[[str], Path]) -> None:
    require_tool("dumpimage", "to read FIT images (Debian package u-boot-tools)")
    fit = built("accton_as4564_26p") / "fit"
    listing = dumpimage(fit / "onie.itb")
    assert "Type:         Flat Device Tree" in listing
    assert "Description:  ac5-98dx35xx-rd.dtb" in listing
    assert "FDT:          fdt-1" in listing and listing.count("Hash algo:    sha256") == 3
    script = (fit / "boot.scr.uimg").read_bytes()
    assert b"${fdtcontroladdr}" not in script  # the FIT's own tree, not u-boot's
    assert b"bootm ${onie_fit_addr}#arm64-accton_as4564_26p-r0\n" in script
