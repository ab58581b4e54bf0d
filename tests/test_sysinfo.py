"""onie-sysinfo, discovery's identity (find_identity) and the runtime files /etc/machine.conf and
/etc/lsb-release: ONIE's field order and fallbacks, run under the host's BusyBox ash, and the
files read back both as sh reads them and as SONiC's installer parses them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.onie.tlvcodes import Code
from builder.onie.tlvinfo import Field, encode
from tests.conftest import require_tool
from tests.guest_eeprom import RECIPES, guest, recipe_from

KVM = RECIPES / "kvm_x86_64.yaml"
EEPROM = encode([Field.of(Code.SERIAL_NUMBER, "SN-EE 2"), Field.of(Code.PART_NUMBER, "PN-EE"),
                 Field.of(Code.MAC_BASE, "02:00:00:AB:CD:EF")])
# onie-sysinfo -a after the EEPROM's three values: ONIE's order (docs/onie-contract.md).
REST = ("bios 2026.11 42623 qemu_x86_64 qemu_x86_64 0 x86_64-qemu_x86_64-r0 x86_64 1 gpt "
        "2023-11-14T22:13+0000 qemu")
# ONIE's machine.conf keys in ONIE's order, then this project's.
ONIE_KEYS = ["onie_version", "onie_vendor_id", "onie_build_machine", "onie_machine_rev",
             "onie_arch", "onie_build_platform", "onie_config_version", "onie_build_date",
             "onie_partition_type", "onie_kernel_version", "onie_firmware", "onie_switch_asic",
             "onie_skip_ethmgmt_macs", "onie_grub_image_name", "onie_uefi_boot_loader",
             "onie_uefi_arch", "onie_machine", "onie_platform"]
OUR_KEYS = ["onie_root_dir", "onie_console_dev", "onie_console_speed", "onie_build_tool"]


def test_sysinfo_all_in_onies_order(tmp_path: Path) -> None:
    g = guest(tmp_path)
    g.path("builtin").write_bytes(EEPROM)
    # A value is its first word (ONIE passes values unquoted).
    assert g.text("onie-sysinfo", "-a") == f"SN-EE PN-EE 02:00:00:AB:CD:EF {REST}\n"
    # The order of the options does not matter; no option is -p.
    assert g.text("onie-sysinfo", "-S", "-v", "-s") == "SN-EE 2026.11 qemu\n"
    assert g.text("onie-sysinfo", "-vs") == "SN-EE 2026.11\n"
    assert g.text("onie-sysinfo") == "x86_64-qemu_x86_64-r0\n"
    for flag, value in (("-e", "02:00:00:AB:CD:EF"), ("-P", "PN-EE"), ("-l", "bios"),
                        ("-i", "42623"), ("-b", "qemu_x86_64"), ("-m", "qemu_x86_64"),
                        ("-r", "0"), ("-c", "x86_64"), ("-f", "1"), ("-t", "gpt"),
                        ("-d", "2023-11-14T22:13+0000"), ("-p", "x86_64-qemu_x86_64-r0")):
        assert g.text("onie-sysinfo", flag) == value + "\n", flag
    assert g.text("onie-sysinfo", "-h").startswith("onie-sysinfo [-hsPelvibmrpcftdSa]\n")
    bad = g.run("onie-sysinfo", "-x")
    assert bad.returncode == 1 and bad.stdout.startswith(b"onie-sysinfo [-h")


def test_sysinfo_fallbacks(tmp_path: Path) -> None:
    """No EEPROM values: DMI on x86, then eth0's address; the command line comes first; an
    empty value is 'unknown'."""
    g = guest(tmp_path)
    g.path("builtin").write_bytes(encode([]))
    assert g.text("onie-sysinfo", "-s", "-P", "-e") == "Unknown Unknown Unknown\n"
    (g.path("dmi")).mkdir()
    g.path("dmi/product_serial").write_text("SN-DMI\n")
    g.path("dmi/product_name").write_text("Standard PC (i440FX + PIIX, 1996)\n")
    (g.path("net") / "eth0").mkdir(parents=True)
    g.path("net/eth0/address").write_text("52:54:00:12:34:56\n")
    assert g.text("onie-sysinfo", "-s", "-P", "-e") == "SN-DMI Standard 52:54:00:12:34:56\n"
    g.path("builtin").write_bytes(EEPROM)
    g.path("cmdline").write_text("quiet serial_num=SN-CMD eth_addr=52:54:00:00:00:01\n")
    assert g.text("onie-sysinfo", "-s", "-e") == "SN-CMD 52:54:00:00:00:01\n"
    out = g.run("onie-sysinfo", "-e", env={"onie_eth_addr": "52:54:00:00:00:02"})
    assert out.stdout == b"52:54:00:00:00:02\n"  # an installer's onie_eth_addr comes first
    conf = g.path("machine.conf")
    conf.write_text(conf.read_text().replace("onie_switch_asic=qemu", "onie_switch_asic="))
    assert g.text("onie-sysinfo", "-S") == "unknown\n"


def test_identity_takes_the_eeprom_before_dmi_and_the_nic(tmp_path: Path) -> None:
    g = guest(tmp_path)
    (g.path("dmi")).mkdir()
    g.path("dmi/product_serial").write_text("SN-DMI\n")
    show = 'read_cmdline; find_identity; echo "$SERIAL|$ETH_ADDR"'
    g.path("builtin").write_bytes(encode([]))
    assert g.ash(show).stdout == "SN-DMI|\n"
    g.path("builtin").write_bytes(EEPROM)
    assert g.ash(show).stdout == "SN-EE2|02:00:00:AB:CD:EF\n"  # header_value drops the space
    g.path("cmdline").write_text("serial_num=SN-CMD eth_addr=52:54:00:00:00:01\n")
    assert g.ash(show).stdout == "SN-CMD|52:54:00:00:00:01\n"


def sonic_read_conf(text: str) -> dict[str, str]:
    """SONiC's installer's read_conf_file, restated: each line split at the first '=', CR and
    anything after '#' dropped, one pair of surrounding double quotes removed."""
    out: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.replace("\r", "").split("#", 1)[0]
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[key] = value
    return out


def sourced(path: Path) -> dict[str, str]:
    require_tool("busybox", "to source the file as installers do")
    out = subprocess.run(["busybox", "sh", "-c", f'. "{path}" && set'], capture_output=True,
                         text=True, check=True).stdout
    return {k: v.strip("'") for k, v in re.findall(r"^((?:onie|DISTRIB)_\w+)=(.*)$", out, re.M)}


def test_machine_conf_keys_values_and_both_readers(tmp_path: Path) -> None:
    g = guest(tmp_path)
    text = g.path("machine.conf").read_text()
    keys = [line.split("=", 1)[0] for line in text.splitlines()]
    assert keys == ONIE_KEYS + OUR_KEYS
    conf = sonic_read_conf(text)
    assert sourced(g.path("machine.conf")) == conf
    assert conf["onie_build_date"] == "2023-11-14T22:13+0000"
    assert '\nonie_build_date="2023-11-14T22:13+0000"\n' in text  # quoted, as ONIE writes it
    assert conf["onie_build_tool"].startswith("onie-builder ")
    assert (conf["onie_platform"], conf["onie_firmware"], conf["onie_partition_type"]) == (
        "x86_64-qemu_x86_64-r0", "bios", "gpt")
    assert conf["onie_kernel_version"] == "6.1.0-test-amd64"
    # u-boot machines: no GRUB or UEFI keys, the firmware is u-boot.
    arm = guest(tmp_path / "arm", recipe_from("", tmp_path, RECIPES.parent.parent / "recipes"
                                              / "platforms" / "qemu_arm64.yaml"))
    arm_conf = sonic_read_conf(arm.path("machine.conf").read_text())
    assert [k for k in ONIE_KEYS if k not in arm_conf] == [
        "onie_grub_image_name", "onie_uefi_boot_loader", "onie_uefi_arch"]
    assert arm_conf["onie_firmware"] == "u-boot"


def test_lsb_release(tmp_path: Path) -> None:
    g = guest(tmp_path)
    path = g.path("lsb-release")
    path.write_text(g.render("guest/etc/lsb-release.j2"))
    assert "DISTRIB_ID=onie" in path.read_text().splitlines()  # SONiC's grep -Fxq
    assert sourced(path) == {"DISTRIB_ID": "onie", "DISTRIB_RELEASE": "2026.11",
                             "DISTRIB_DESCRIPTION": "Open Network Install Environment"}


@pytest.mark.parametrize("version", ["2026.11$(reboot)", "1 'a'", '2026"', "2026#1", "a\\b"])
def test_a_version_neither_reader_gets_back_is_refused(tmp_path: Path, version: str) -> None:
    g = guest(tmp_path)
    g.recipe = recipe_from(f"version: {version!r}\n".replace("\\\\", "\\"), tmp_path, KVM)
    with pytest.raises(BuildError, match="cannot be written to a key=value file"):
        g.render("guest/etc/machine.conf.j2")


def test_installer_environment_has_onies_names(tmp_path: Path) -> None:
    g = guest(tmp_path)
    g.path("builtin").write_bytes(EEPROM)
    g.path("cmdline").write_text("quiet boot_reason=install dhcp=eth0 ip=dhcp bootfile=x.bin verbose"
                                 " testing sec_key=K1\n")
    installer = g.path("installer")
    installer.write_text("#!/bin/sh\nenv | grep '^onie_' | sort\n")
    installer.chmod(0o755)
    out = g.ash(f'read_cmdline; find_identity; run_installer "{installer}" http://s/onie-installer')
    env = dict(line.split("=", 1) for line in out.stdout.splitlines())
    expected = {
        "onie_exec_url": "http://s/onie-installer", "onie_installer": str(installer),
        "onie_boot_reason": "install", "onie_operation": "os-install",
        "onie_serial_num": "SN-EE2", "onie_eth_addr": "02:00:00:AB:CD:EF", "onie_sec_key": "K1",
        "onie_dhcp": "eth0", "onie_ip": "dhcp", "onie_bootfile": "x.bin", "onie_verbose": "y",
        "onie_testing": "y", "onie_default_filename": "onie-installer-x86_64-qemu_x86_64-r0",
        "onie_platform": "x86_64-qemu_x86_64-r0", "onie_vendor_id": "42623",
        "onie_machine": "qemu_x86_64", "onie_firmware": "bios",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert env["onie_default_filenames"].split()[-2:] == ["onie-installer", "onie-installer.bin"]
    assert {k for k in env if k.startswith("onie_disco_")} >= {
        "onie_disco_ip", "onie_disco_serverid", "onie_disco_onie_url", "onie_disco_url"}
