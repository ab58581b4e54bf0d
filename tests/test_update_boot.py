"""ONIE's update mode with A/B slots (#17), booted for real from a disk.

Version N (2026.11) is embedded on a blank disk from its ISO. Booted into update mode, its
discovery finds updaters by DHCP option 114 in the test's namespace: one signed for another
platform, one older than N, one with a damaged signature (each refused, by name), then N+1
(2026.12), which writes slot b. QEMU is killed while slot b is written, and again once it is
written but not yet switched to: the disk boots N each time. The complete update makes GRUB
try slot b once; that trial boot is killed before the kernel runs, so the next boot falls back
to N and says so. Updated again, the disk boots N+1, which confirms itself (`onie-sysinfo -v`),
and GRUB's menu keeps N as the previous version. A firmware package staged there with
onie-fwpkg runs in the next update boot. Under OVMF, the same update from N's disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console
from builder.lab.servers import Dnsmasq, HttpServer
from builder.signing.format import BLOCK_SIZE, ImageType, sign_installer
from builder.signing.keys import KeyType, load_private_key, make_key_pair
from builder.signing.signers import KeySigner
from tests.conftest import ROOT, require_root_netns, require_tool, run_cli
from tests.imagelab import (
    choose_grub_entry,
    ext4_read,
    ovmf_args,
    partition_bytes,
    subnet,
    x86_command,
)

pytestmark = [pytest.mark.lab, pytest.mark.network]

PLATFORM = "x86_64-qemu_x86_64-r0"
ISO = f"onie-recovery-{PLATFORM}.iso"
UPDATER = f"onie-updater-{PLATFORM}"
N_EPOCH = 1780000000  # SOURCE_DATE_EPOCH of N: the version its own updater would carry
NEXT_EPOCH = N_EPOCH + 86400  # N+1's
UPDATE_ENTRY = 3  # the disk menu: Install OS, Rescue, Uninstall OS, Update ONIE, Embed ONIE
BANNER = r"ONIE environment (\S+) for (\S+)\r?\n"


@dataclass(frozen=True)
class Versions:
    n: Path  # N's build output (its ISO)
    next_updater: Path  # N+1's signed updater
    key: Path  # the updater signing key (private)
    disk: Path  # a disk N was embedded on, to copy


def build(recipe: Path, text: str, out: Path, env: dict[str, str], epoch: int) -> Path:
    recipe.write_text(text)
    proc = run_cli("build", "--allow-untrusted", str(recipe), "--out", str(out), "--json", "--no-lock",
                   env={**env, "SOURCE_DATE_EPOCH": str(epoch)})
    return Path(json.loads(proc.stdout)["result"][0]["out"])


def partitions(disk: Path) -> dict[str, dict[str, object]]:
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True,
                                      check=True, text=True).stdout)["partitiontable"]
    return {p["name"]: p for p in table["partitions"]}


def onie_boot(disk: Path, path: str) -> bytes:
    start, size = partition_bytes(partitions(disk)["ONIE-BOOT"])
    return ext4_read(disk, start, size, path)


def grubenv(disk: Path) -> dict[str, str]:
    text = onie_boot(disk, "/grub/grubenv").decode()
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Versions:
    """N (trusting the updater key, with its ISO) and N+1's signed updater, built once; and a
    disk N was embedded on from its ISO (SeaBIOS, the ISO's embed entry)."""
    require_tool("xorriso", "to build ISO images")
    require_tool("debugfs", "to read the disk's ONIE-BOOT (Debian package e2fsprogs)")
    tmp = tmp_path_factory.mktemp("update")
    make_key_pair(KeyType.ED25519, tmp / "updater")
    base = (f"extends: {ROOT}/tests/recipes/lab_x86_64.yaml\n"
            "discovery:\n  insecure: false\ntrust:\n  keys: [updater.pub]\n")
    n = build(tmp / "n.yaml", base + "images:\n  formats: [iso]\n", tmp / "n", cache_env, N_EPOCH)
    nxt = build(tmp / "next.yaml", "extends: n.yaml\nversion: '2026.12'\nimages:\n"
                "  formats: [updater]\n  updater:\n    key: updater.key\n", tmp / "next",
                cache_env, NEXT_EPOCH)
    disk = tmp / "n-disk.img"
    with disk.open("wb") as f:
        f.truncate(256 << 20)
    argv = x86_command("-cdrom", str(n / ISO), "-drive", f"file={disk},format=raw,if=virtio",
                       "-nic", "none", "-boot", "d")
    with Console.start(argv, tmp / "embed.log") as console:
        choose_grub_entry(console, 2)  # ISO: Install OS, Rescue, Embed ONIE, ...
        console.expect("onie-updater: writing ONIE 2026\\.11 to slot a of ONIE-BOOT", 240)
        console.expect(f"onie-updater: done: ONIE 2026\\.11 for {PLATFORM} is on /dev/vda", 120)
        console.expect(r"reboot: Power down", 60)
        assert console.proc.wait(60) == 0
    assert list(partitions(disk)) == ["GRUB-BOOT", "EFI System", "ONIE-BOOT"]
    assert grubenv(disk) == {"onie_slot": "a", "onie_slot_a": "2026.11"}
    assert onie_boot(disk, "/onie/slot-a/vmlinuz") == (n / "vmlinuz").read_bytes()
    return Versions(n, nxt / UPDATER, tmp / "updater.key", disk)


class UpdateLab:
    """The namespace, dnsmasq (option 114: /onie-updater) and the web server serving it."""

    def __init__(self, ns: NetNamespace, tmp: Path) -> None:
        net = subnet()
        ns.add_tap("tap0", f"{net}.1/24")
        self.www = tmp / "www"
        self.www.mkdir()
        self.web = HttpServer(ns, self.www, tmp / "httpd", address=f"{net}.1").start()
        Dnsmasq(ns, "tap0", f"{net}.1", tmp / "dnsmasq",
                options=[f"114,{self.web.url('onie-updater')}"]).start()
        self.ns = ns
        self.net = net
        self.tmp = tmp

    def serve(self, data: bytes) -> None:
        """What /onie-updater answers from now on (replaced whole: never half a file)."""
        new = self.www / ".onie-updater.new"
        new.write_bytes(data)
        os.replace(new, self.www / "onie-updater")

    def boot(self, disk: Path, log: str, *firmware: str) -> Console:
        argv = x86_command(*firmware, "-drive", f"file={disk},format=raw,if=none,id=d0",
                           "-device", "virtio-blk-pci,drive=d0,bootindex=1",
                           "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                           "-device", "virtio-net-pci,netdev=n0,romfile=")
        return Console.start(argv, self.tmp / log, netns=self.ns.name)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[UpdateLab]:
    require_root_netns()
    require_tool("dnsmasq", "for the lab's DHCP server (dnsmasq-base)")
    with NetNamespace.create("obu") as ns:
        yield UpdateLab(ns, tmp_path)


def resigned(updater: Path, key: Path, *, version: int, platform: str, tmp: Path) -> bytes:
    """N+1's updater bytes signed again with another version or platform."""
    payload = tmp / "payload"
    payload.write_bytes(updater.read_bytes()[:-BLOCK_SIZE])
    out = tmp / "resigned"
    sign_installer(payload, out, KeySigner(load_private_key(key)), image=ImageType.UPDATER,
                   version=version, platforms=(platform,))
    return out.read_bytes()


def kill(console: Console) -> None:
    """Power cut: SIGKILL to this QEMU (by its PID), then reap it."""
    console.proc.kill()
    console.stop()


def update_boot(lab: UpdateLab, disk: Path, log: str, version: str, *firmware: str) -> Console:
    """Boot the disk, choose "Update ONIE", check the running version and the mode line."""
    console = lab.boot(disk, log, *firmware)
    choose_grub_entry(console, UPDATE_ENTRY, 300)
    banner = console.expect(BANNER, 300)
    assert banner.groups() == (version, PLATFORM)
    console.expect(r"onie: update mode: boot_reason=update from ONIE's GRUB menu", 30)
    return console


def test_update_refusals_power_cuts_fallback_and_success(versions: Versions, lab: UpdateLab,
                                                         tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    shutil.copyfile(versions.disk, disk)
    good = versions.next_updater.read_bytes()
    firmware = tmp_path / "fw-cpld"
    firmware.write_text("#!/bin/sh\necho \"FLASHED cpld on $onie_platform\"\n")
    sign_installer(firmware, lab.www / "fw-cpld.bin", KeySigner(load_private_key(versions.key)),
                   image=ImageType.FIRMWARE, version=42, platforms=(PLATFORM,))
    bad_signature = bytearray(good)
    bad_signature[-BLOCK_SIZE + 300] ^= 1  # in the statement: the signature no longer matches
    refusals = [
        ("wrong-platform", resigned(versions.next_updater, versions.key, version=NEXT_EPOCH,
                                    platform="x86_64-other_box-r0", tmp=tmp_path)),
        ("downgrade", resigned(versions.next_updater, versions.key, version=N_EPOCH - 1,
                               platform=PLATFORM, tmp=tmp_path)),
        ("bad-signature", bytes(bad_signature))]

    # 1. N in update mode refuses each bad updater by name, then takes N+1; the power is cut
    #    while slot b is being written.
    with update_boot(lab, disk, "1-refusals.log", "2026.11") as console:
        for reason, data in refusals:
            lab.serve(data)
            console.expect(rf"onie-discovery: refused {reason}: ", 240)
        lab.serve(good)
        console.expect(r"onie-updater: writing ONIE 2026\.12 to slot b of ONIE-BOOT", 240)
        kill(console)
    assert grubenv(disk)["onie_slot"] == "a"

    # 2. N still boots; cut again once slot b is complete but not yet switched to.
    with update_boot(lab, disk, "2-written.log", "2026.11") as console:
        console.expect(r"onie-updater: slot b holds ONIE 2026\.12", 240)
        kill(console)
    assert "onie_trial" not in grubenv(disk)

    # 3. N still boots; this time the update completes: slot b is to be tried once.
    with update_boot(lab, disk, "3-update.log", "2026.11") as console:
        console.expect(r"onie-updater: next boot tries slot b \(ONIE 2026\.12\) once; slot a "
                       r"stays the fallback until it reaches discovery", 240)
        console.expect(r"reboot: Power down", 120)
        assert console.proc.wait(60) == 0
    env = grubenv(disk)
    assert (env["onie_slot"], env["onie_trial"], env["onie_slot_b"]) == ("a", "b", "2026.12")

    # 4. The trial boot is cut before its kernel runs: it never reaches discovery.
    with lab.boot(disk, "4-trial-cut.log") as console:
        console.expect(r"Loading ONIE: Install OS \.\.\.", 300)
        kill(console)
    env = grubenv(disk)
    assert (env["onie_slot"], env["onie_tried"], env.get("onie_trial", "")) == ("a", "b", "")

    # 5. So N boots again and says why; updated again from there.
    with update_boot(lab, disk, "5-fallback.log", "2026.11") as console:
        console.expect(r"onie: the update to ONIE 2026\.12 \(slot b\) did not reach discovery on "
                       r"its trial boot: running slot a \(ONIE 2026\.11\), the previous version", 120)
        console.expect(r"onie-updater: next boot tries slot b", 240)
        console.expect(r"reboot: Power down", 120)
        assert console.proc.wait(60) == 0

    # 6. N+1 boots, reaches discovery and confirms itself; N stays in the menu.
    with lab.boot(disk, "6-next.log") as console:
        console.expect(r"ONIE: Install OS \(previous version 2026\.11\)", 300)
        banner = console.expect(BANNER, 300)
        assert banner.groups() == ("2026.12", PLATFORM)
        console.expect(r"onie: install mode: boot_reason=install from ONIE's GRUB menu", 30)
        console.expect(r"onie: update confirmed: slot b \(ONIE 2026\.12\) reached discovery", 60)
        console.expect(r"ONIE:\S* # ", 120)
        console.run("onie-discovery-stop > /dev/null 2>&1; true", timeout=60)
        assert console.run("onie-sysinfo -v") == "2026.12"
        # 7. A firmware package staged here is applied by the next update boot.
        # (discovery is stopped, its lease gone: an address of our own on the test's subnet)
        console.run(f"ip addr add {lab.net}.77/24 dev eth0 && ip link set eth0 up", timeout=30)
        console.run(f"wget -q -O /tmp/fw-cpld.bin {lab.web.url('fw-cpld.bin')}", timeout=60)
        assert console.run("onie-fwpkg add /tmp/fw-cpld.bin", timeout=60) == (
            "Staged firmware update package fw-cpld.bin (version 42): the next update boot "
            "applies it (onie-boot-mode -o update).")
        assert console.run("onie-boot-mode -o update && onie-boot-mode") == (
            "Default boot: ONIE mode: update")
        console.send("reboot -f\n")
        assert console.proc.wait(60) == 0
    assert re.search(r"2026\.12", onie_boot(disk, "/onie/version").decode())
    env = grubenv(disk)
    assert {k: env.get(k) for k in ("onie_slot", "onie_slot_a", "onie_slot_b", "onie_trial",
                                    "onie_tried", "onie_mode")} == {
        "onie_slot": "b", "onie_slot_a": "2026.11", "onie_slot_b": "2026.12",
        "onie_trial": "", "onie_tried": None, "onie_mode": "update"}

    # 8. grubenv's onie_mode makes this an update boot: the package runs first, then discovery
    #    refuses N+1's updater, which is not newer than N+1 itself.
    with lab.boot(disk, "8-firmware.log") as console:
        console.expect(r"onie: update mode: boot_reason=update from GRUB: onie_mode=update in "
                       r"ONIE-BOOT's grubenv made it the default entry", 300)
        console.expect(r"onie-fwpkg: applying fw-cpld.bin \(version 42\), attempt 1 of 3", 120)
        console.expect(rf"FLASHED cpld on {PLATFORM}", 60)
        console.expect(r"onie-fwpkg: fw-cpld.bin applied", 60)
        console.expect(rf"onie-discovery: refused downgrade: version {NEXT_EPOCH} is not newer "
                       rf"than the running environment's {NEXT_EPOCH}", 240)
        kill(console)
    result = onie_boot(disk, "/onie/update/results/fw-cpld.bin").decode()
    assert result.startswith("fw-cpld.bin | 42 | success | "), result
    # Update boots asked for updaters as ONIE does: 4 in the first boot, 1 in each other.
    updates = [r for r in lab.web.requests()
               if r.path == "/onie-updater" and r.header("ONIE-OPERATION") == "onie-update"]
    assert len(updates) >= 8


def test_update_under_uefi(versions: Versions, lab: UpdateLab, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    shutil.copyfile(versions.disk, disk)
    lab.serve(versions.next_updater.read_bytes())
    firmware = ovmf_args(tmp_path)
    with update_boot(lab, disk, "update.log", "2026.11", *firmware) as console:
        console.expect(r"onie-updater: next boot tries slot b", 300)
        console.expect(r"reboot: Power down", 120)
        assert console.proc.wait(60) == 0
    with lab.boot(disk, "next.log", *firmware) as console:
        banner = console.expect(BANNER, 300)
        assert banner.groups() == ("2026.12", PLATFORM)
        console.expect(r"onie: update confirmed: slot b \(ONIE 2026\.12\)", 120)
    assert grubenv(disk)["onie_slot"] == "b"
