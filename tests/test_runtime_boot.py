"""ONIE's runtime contract in a booted guest (QEMU TCG): /etc/machine.conf, /etc/lsb-release,
onie-sysinfo and onie-syseeprom on the virtual EEPROM, a VM's own EEPROM through QEMU fw_cfg,
and the ONIE-SERIAL-NUMBER and ONIE-ETH-ADDR headers discovery sends from it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from builder.initramfs.eeprom import FW_CFG_NAME, make_image
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import HttpServer
from builder.onie.tlvcodes import Code
from builder.onie.tlvinfo import Field, decode, encode, render_text
from builder.recipe.load import load_recipe
from tests.conftest import require_qemu
from tests.imagelab import choose_grub_entry, ovmf_args, x86_command
from tests.installers import script_installer
from tests.test_discovery_boot import Lab, finish, image, lab, lines  # noqa: F401 (fixtures)
from tests.test_sysinfo import ONIE_KEYS, OUR_KEYS, sonic_read_conf

pytestmark = [pytest.mark.lab, pytest.mark.network]

PLATFORMS = Path(__file__).resolve().parent.parent / "recipes" / "platforms"
VM_SERIAL = "SN-FWCFG-0042"
VM_MAC = "02:00:00:AB:CD:EF"
VM_EEPROM = encode([Field.of(Code.PRODUCT_NAME, "QEMU-x86_64-switch"),
                    Field.of(Code.SERIAL_NUMBER, VM_SERIAL), Field.of(Code.MAC_BASE, VM_MAC),
                    Field.of(Code.LABEL_REVISION, "R07")])
DMI_SERIAL = "SN-DMI-0001"


def fw_cfg(path: Path, data: bytes) -> list[str]:
    """QEMU options giving the VM its own EEPROM."""
    path.write_bytes(data)
    return ["-fw_cfg", f"name={FW_CFG_NAME},file={path}"]


def rescue(image_dir: Path, log: Path, extra: Sequence[str] = ()) -> Console:
    manifest = json.loads((image_dir / "manifest.json").read_text())
    require_qemu(manifest["arch"])
    argv = qemu_command(machine_for(manifest["arch"]), image_dir / "vmlinuz",
                        image_dir / "initrd.img",
                        manifest["kernel"]["cmdline"] + " boot_reason=rescue",
                        extra=["-smbios", f"type=1,serial={DMI_SERIAL}", *extra])
    return Console.start(argv, log_path=log)


def guest_bytes(console: Console, path: str) -> bytes:
    return bytes.fromhex(console.run(f"od -An -v -tx1 {path}").replace("\n", "").replace(" ", ""))


def test_runtime_files_sysinfo_and_a_vms_own_eeprom(built: Callable[[str], Path],
                                                     tmp_path: Path) -> None:
    image_dir = built("qemu_x86_64")
    kernel = json.loads((image_dir / "manifest.json").read_text())["kernel"]["release"]
    with rescue(image_dir, tmp_path / "console.log", fw_cfg(tmp_path / "vm.bin", VM_EEPROM)) as c:
        c.expect(r"ONIE:/ # ", timeout=120)
        text = c.run("cat /etc/machine.conf")
        assert [line.split("=", 1)[0] for line in text.splitlines()] == ONIE_KEYS + OUR_KEYS
        conf = sonic_read_conf(text)
        assert (conf["onie_firmware"], conf["onie_kernel_version"]) == ("bios", kernel)
        assert c.run("cat /etc/lsb-release").splitlines() == [
            "DISTRIB_ID=onie", "DISTRIB_RELEASE=2026.11",
            'DISTRIB_DESCRIPTION="Open Network Install Environment"']
        # The VM's EEPROM (fw_cfg) wins over the image's and over SMBIOS's serial number.
        assert c.run("onie-sysinfo -a") == (
            f"{VM_SERIAL} Standard {VM_MAC} bios 2026.11 42623 qemu_x86_64 qemu_x86_64 0 "
            "x86_64-qemu_x86_64-r0 x86_64 1 gpt 2023-11-14T22:13+0000 qemu")
        assert c.run("onie-syseeprom") + "\n" == render_text(VM_EEPROM)
        assert c.run("onie-syseeprom -g 0x27 | tail -1") == "R07"  # what SONiC keeps as hw_rev
        # -s writes a copy in RAM (no ONIE-BOOT here) that reads back, CRC and all.
        out = c.run("onie-syseeprom -s 0x23=SN-WRITTEN,0x22=PN-9")
        written = guest_bytes(c, "/run/onie/eeprom.bin")
        assert decode(written) == [*decode(VM_EEPROM)[:1], *decode(VM_EEPROM)[2:],
                                   Field.of(0x23, "SN-WRITTEN"), Field.of(0x22, "PN-9")]
        assert out.endswith("Programming passed.\n" + render_text(written).rstrip("\n"))
        assert c.run("onie-sysinfo -s -P -e") == f"SN-WRITTEN PN-9 {VM_MAC}"
        status, said = c.run_status("onie-syseeprom -g 0x2f")
        assert (status, said) == (1, "ERROR: TLV code not present in EEPROM: 0x2f")


def test_without_a_vms_eeprom_the_images_own_and_dmi(built: Callable[[str], Path],
                                                     tmp_path: Path) -> None:
    image_dir = built("qemu_x86_64")
    builtin = make_image(load_recipe(PLATFORMS / "qemu_x86_64.yaml")[0])
    assert builtin is not None
    with rescue(image_dir, tmp_path / "console.log") as c:
        c.expect(r"ONIE:/ # ", timeout=120)
        assert guest_bytes(c, "/etc/onie/eeprom.bin") == builtin
        assert c.run("onie-syseeprom") + "\n" == render_text(builtin)
        # No serial number or MAC in the image's EEPROM: SMBIOS's serial, eth0's address.
        assert c.run("onie-sysinfo -s -P -e") == f"{DMI_SERIAL} QEMU-X86-64-0001 52:54:00:12:34:56"


def test_discovery_headers_carry_the_eeproms_serial_and_mac(image: Path, lab: Lab) -> None:  # noqa: F811
    www = lab.tmp / "www"
    script_installer(www / "onie" / "eeprom.sh", "eeprom")
    web = HttpServer(lab.ns, www, lab.tmp / "httpd", address=lab.server).start()
    lab.dnsmasq(options=[f"114,{web.url('onie/eeprom.sh')}"])
    with lab.boot(image, extra=fw_cfg(lab.tmp / "vm.bin", VM_EEPROM)) as console:
        text = finish(console)
    [request] = web.requests()
    # The EEPROM's values, though the VM's SMBIOS has a serial number too (Lab.boot's).
    assert (request.header("ONIE-SERIAL-NUMBER"), request.header("ONIE-ETH-ADDR")) == (VM_SERIAL, VM_MAC)
    report = lines(text, "TEST-INSTALLER eeprom ")[0]
    assert re.search(rf" serial={VM_SERIAL} mac={VM_MAC} ", report), report


def test_arm64_u_boot_platform_reads_its_vms_eeprom(built: Callable[[str], Path],
                                                    tmp_path: Path) -> None:
    image_dir = built("qemu_arm64")
    with rescue(image_dir, tmp_path / "console.log", fw_cfg(tmp_path / "vm.bin", VM_EEPROM)) as c:
        c.expect(r"ONIE:/ # ", timeout=180)
        # No DMI on arm64: the part number is Unknown; the firmware is the platform's, u-boot.
        assert c.run("onie-sysinfo -a") == (
            f"{VM_SERIAL} Unknown {VM_MAC} u-boot 2026.11 42623 qemu_arm64 qemu_arm64 0 "
            "arm64-qemu_arm64-r0 arm64 1 gpt 2023-11-14T22:13+0000 qemu")
        assert c.run("onie-syseeprom") + "\n" == render_text(VM_EEPROM)
        assert "onie_grub_image_name" not in c.run("cat /etc/machine.conf")


def test_uefi_boot_says_uefi(built: Callable[[str], Path], tmp_path: Path) -> None:
    """/init rewrites onie_firmware before anything reads machine.conf."""
    iso = built("qemu_x86_64") / "onie-recovery-x86_64-qemu_x86_64-r0.iso"
    argv = x86_command(*ovmf_args(tmp_path), "-cdrom", str(iso), "-nic", "none")
    with Console.start(argv, tmp_path / "console.log") as c:
        choose_grub_entry(c, 1)  # ONIE: Rescue
        c.expect(r"ONIE:/ # ", timeout=300)
        assert c.run("grep ^onie_firmware= /etc/machine.conf") == "onie_firmware=uefi"
        assert c.run("onie-sysinfo -l -t") == "uefi gpt"
        keys = [line.split("=", 1)[0] for line in c.run("cat /etc/machine.conf").splitlines()]
        assert keys == ONIE_KEYS + OUR_KEYS
