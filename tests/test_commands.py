"""ONIE's guest commands under the host's BusyBox ash (tests/guestcmd.py): onie-boot-mode and
onie-nos-mode over a real grubenv (grub-editenv) and over a fake u-boot environment,
onie-support's tarball, onie-discovery-stop/start/onie-stop on a stand-in discovery with
children. Output lines are ONIE's (docs/commands.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guestcmd import COMMANDS, Guest, platform_recipe

FAKE_FW_SETENV = """#!/bin/sh
# fake fw_setenv NAME [VALUE]: the u-boot environment as name=value lines in $HOME/uboot.env
echo "fw_setenv $*" >> "$HOME/fw.calls"
env=$HOME/uboot.env
touch "$env"
grep -v "^$1=" "$env" > "$env.new"
[ $# -ge 2 ] && echo "$1=$2" >> "$env.new"
mv "$env.new" "$env"
"""
FAKE_FW_PRINTENV = """#!/bin/sh
# fake fw_printenv -n NAME
echo "fw_printenv $*" >> "$HOME/fw.calls"
[ "$1" = -n ] || exit 2
value=$(sed -n "s/^$2=//p" "$HOME/uboot.env" 2> /dev/null)
[ -n "$value" ] || { echo "## Error: \\"$2\\" not defined" >&2; exit 1; }
echo "$value"
"""


@pytest.fixture
def x86(tmp_path: Path) -> Guest:
    return Guest(tmp_path, platform_recipe("qemu_x86_64"))


@pytest.fixture
def arm(tmp_path: Path) -> Guest:
    guest = Guest(tmp_path, platform_recipe("qemu_arm64"))
    guest.install("fw_setenv", FAKE_FW_SETENV)
    guest.install("fw_printenv", FAKE_FW_PRINTENV)
    return guest


def out(proc: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    assert proc.stderr == "", proc.stderr
    return proc.returncode, proc.stdout


def grubenv(guest: Guest) -> dict[str, str]:
    """The grubenv as the host's grub-editenv lists it."""
    listed = subprocess.run(["grub-editenv", guest.onie_boot / "grub" / "grubenv", "list"],
                            capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in listed.splitlines())


def test_every_command_parses(tmp_path: Path) -> None:
    for name in ("qemu_x86_64", "qemu_arm64"):
        guest = Guest(tmp_path / name, platform_recipe(name))
        for command in COMMANDS:
            assert guest.sh(f'sh -n "$(command -v {command})"').returncode == 0, command
        rc = tmp_path / name / "rc"
        rc.write_text(guest.render("guest/etc/onie-boot-rc.j2"))
        assert guest.sh(f"sh -n {rc}").returncode == 0


def test_boot_mode_in_grubenv(x86: Guest) -> None:
    assert out(x86.command("onie-boot-mode")) == (0, "Default boot: ONIE mode: unknown\n")
    assert out(x86.command("onie-boot-mode", "-o", "rescue")) == (0, "")
    assert grubenv(x86) == {"onie_mode": "rescue"}
    assert out(x86.command("onie-boot-mode")) == (0, "Default boot: ONIE mode: rescue\n")
    assert out(x86.command("onie-boot-mode", "-v", "-o", "install")) == (
        0, "Setting ONIE mode to: install\n")
    assert out(x86.command("onie-boot-mode", "-l", "-o", "embed")) == (
        0, "Default boot: ONIE mode: embed\n")
    assert out(x86.command("onie-boot-mode", "-q", "-l")) == (0, "")
    assert out(x86.command("onie-boot-mode", "-v", "-o", "none")) == (0, "Clearing the ONIE mode\n")
    assert grubenv(x86) == {}
    assert out(x86.command("onie-boot-mode", "-l")) == (0, "Default boot: ONIE mode: unknown\n")


@pytest.mark.parametrize(("args", "status", "first"), [
    (["-o", "bogus"], 1, "ERROR: Unknown ONIE mode: bogus"),
    (["-x"], 1, "usage: onie-boot-mode [-o <onie_mode>] [-lhvq]"),
    (["-h"], 0, "usage: onie-boot-mode [-o <onie_mode>] [-lhvq]"),
    (["extra"], 1, "Unknown argument: extra"),
])
def test_boot_mode_refuses_what_onie_refuses(x86: Guest, args: list[str], status: int,
                                             first: str) -> None:
    proc = x86.command("onie-boot-mode", *args)
    assert (proc.returncode, proc.stdout.splitlines()[0]) == (status, first)
    assert not (x86.onie_boot / "grub" / "grubenv").exists()


def test_boot_mode_needs_onie_boot(x86: Guest) -> None:
    x86.mounts.write_text("proc /proc proc rw 0 0\n")
    error = (f"ERROR: onie-boot-mode: ONIE-BOOT is not mounted at {x86.onie_boot}"
             " (no disk with an ONIE-BOOT partition)\n")
    assert out(x86.command("onie-boot-mode", "-o", "rescue")) == (1, error)
    assert out(x86.command("onie-boot-mode")) == (1, error)


def test_nos_mode_in_grubenv(x86: Guest) -> None:
    x86.command("onie-boot-mode", "-o", "install")
    assert out(x86.command("onie-nos-mode")) == (0, "none\n")
    assert out(x86.command("onie-nos-mode", "-v", "-s")) == (0, "Enabling NOS mode.\n")
    # Setting NOS mode clears ONIE's boot mode, as ONIE's does.
    assert grubenv(x86) == {"onie_nos_mode": "yes"}
    assert out(x86.command("onie-nos-mode", "-g")) == (0, "yes\n")
    assert out(x86.command("onie-nos-mode", "-v")) == (0, "Current NOS mode: yes\n")
    assert out(x86.command("onie-nos-mode", "-c", "-g")) == (0, "none\n")
    assert grubenv(x86) == {}
    assert out(x86.command("onie-nos-mode", "-s", "-c")) == (
        1, "ERROR: onie-nos-mode: Only one of '-c' or '-s' can be specified\n")
    x86.mounts.write_text("")
    status, text = out(x86.command("onie-nos-mode", "-s"))
    assert status == 1 and text.endswith("ERROR: onie-nos-mode: Enabling NOS mode failed.\n")


def test_u_boot_environment(arm: Guest) -> None:
    """arm64 keeps the same variables in the u-boot environment (fw_setenv, fw_printenv: a fake
    here, as the arm64 image does not carry them yet)."""
    assert out(arm.command("onie-boot-mode", "-o", "rescue")) == (0, "")
    assert out(arm.command("onie-boot-mode")) == (0, "Default boot: ONIE mode: rescue\n")
    assert out(arm.command("onie-nos-mode", "-s")) == (0, "")
    assert (arm.root / "uboot.env").read_text() == "onie_boot_reason=rescue\nonie_nos_mode=yes\n"
    assert out(arm.command("onie-boot-mode", "-o", "none")) == (0, "")
    assert out(arm.command("onie-nos-mode", "-c")) == (0, "")
    assert out(arm.command("onie-nos-mode")) == (0, "none\n")
    assert (arm.root / "uboot.env").read_text() == ""
    # The forms both u-boot-tools' and libubootenv's tools take (no ONIE-only -f).
    calls = (arm.root / "fw.calls").read_text().splitlines()
    assert [c for c in calls if c.startswith("fw_setenv")] == [
        "fw_setenv onie_boot_reason rescue", "fw_setenv onie_nos_mode yes",
        "fw_setenv onie_boot_reason", "fw_setenv onie_nos_mode"]
    (arm.bin / "fw_setenv").unlink()
    assert out(arm.command("onie-boot-mode", "-o", "rescue")) == (
        1, "ERROR: onie-boot-mode: fw_setenv is missing\n")


def test_support_tarball(x86: Guest) -> None:
    (x86.log_dir / "onie-discovery.log").write_text("onie-discovery: off mode=rescue\n")
    x86.install("onie-sysinfo", '#!/bin/sh\necho "sysinfo $*"\n')
    outdir = x86.root / "out"
    outdir.mkdir()
    name = "onie-support-qemu_x86_64"
    assert out(x86.command("onie-support", outdir)) == (
        0, f"Success: Support tarball created: {outdir}/{name}.tar.bz2\n")
    with tarfile.open(outdir / f"{name}.tar.bz2", "r:bz2") as tar:
        files = {m.name.removeprefix(f"{name}/"): m for m in tar.getmembers() if m.isfile()}

        def text(member: str) -> str:
            f = tar.extractfile(files[member])
            assert f is not None
            return f.read().decode()

        assert set(files) == {
            "log/onie-discovery.log", "kernel_cmdline.txt", "runtime-export-env.txt",
            "runtime-set-env.txt", "runtime-process.txt", "dmesg.txt", "mounts.txt",
            "interfaces.txt", "machine.conf", "onie-sysinfo.txt", "fdisk.txt"}
        assert text("log/onie-discovery.log") == "onie-discovery: off mode=rescue\n"
        assert text("kernel_cmdline.txt") == "console=ttyS0 boot_reason=rescue\n"
        assert text("machine.conf") == x86.machine_conf.read_text()
        assert text("onie-sysinfo.txt") == "sysinfo -a\n"
        assert "lo" in text("interfaces.txt")
    assert not list(x86.root.glob("onie-support.*"))  # the work folder is gone


def test_support_refuses_a_missing_folder(x86: Guest) -> None:
    assert out(x86.command("onie-support", x86.root / "nowhere")) == (
        1, f"Error: Output directory does not exist: {x86.root}/nowhere\n"
           "Usage: onie-support [<output_directory>]   (default /tmp)\n")


FAKE_DISCOVERY = """#!/bin/sh
# Stands in for /bin/onie-discovery: a child, a grandchild, then the PID file, then a loop.
sleep 300 &
( sleep 301; echo never ) &
echo $$ > {pid_file}
while :; do sleep 0.1; done
"""


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


@pytest.fixture
def service(x86: Guest) -> Iterator[Guest]:
    x86.install("onie-discovery", FAKE_DISCOVERY.format(pid_file=x86.run_dir / "discovery.pid"))
    yield x86
    with contextlib.suppress(OSError, ValueError):  # a failed test leaves nothing running
        os.killpg(int((x86.run_dir / "discovery.pid").read_text()), signal.SIGKILL)


def test_stop_and_start(service: Guest) -> None:
    pid_file = service.run_dir / "discovery.pid"
    assert out(service.command("onie-discovery-stop")) == (0, "Stopping: onie-discovery... not running.\n")
    assert out(service.command("onie-discovery-start")) == (0, "Starting: onie-discovery... done.\n")
    pid = int(pid_file.read_text())
    assert len(session_members(pid)) >= 3  # discovery, its child and its subshell's child
    assert out(service.command("onie-discovery-start")) == (
        0, f"Starting: onie-discovery... already running (pid {pid}).\n")
    assert out(service.command("onie-discovery-stop")) == (0, "Stopping: onie-discovery... done.\n")
    assert session_members(pid) == [] and not pid_file.exists()
    # onie-stop does the same; a stale PID file (a PID now used by another program) is no target.
    assert out(service.command("onie-discovery-start")) == (0, "Starting: onie-discovery... done.\n")
    pid = int(pid_file.read_text())
    assert out(service.command("onie-stop")) == (0, "Stopping: onie-discovery... done.\n")
    assert session_members(pid) == []
    pid_file.write_text(f"{os.getpid()}\n")
    assert out(service.command("onie-stop")) == (0, "Stopping: onie-discovery... not running.\n")
    assert not pid_file.exists()
    proc = service.command("onie-stop", "-x")
    assert (proc.returncode, proc.stdout.splitlines()[0]) == (1, "Unknown argument: -x")


def test_onie_boot_rc_does_nothing_without_a_disk(tmp_path: Path) -> None:
    """No block device (netboot): no wait, no process but the script, not a word."""
    guest = Guest(tmp_path, platform_recipe("qemu_x86_64"), sys_block=str(tmp_path / "block"))
    (tmp_path / "block").mkdir()
    rc = guest.install("S01onie-boot", guest.render("guest/etc/onie-boot-rc.j2"))
    proc = guest.sh(str(rc))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    # A partition named ONIE-BOOT whose device node is not there is left alone too.
    (tmp_path / "block" / "vdz1").mkdir()
    (tmp_path / "block" / "vdz1" / "uevent").write_text("DEVNAME=vdz1\nPARTNAME=ONIE-BOOT\n")
    proc = guest.sh(str(rc))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def slot_rc(guest: Guest, cmdline: str, env: dict[str, str]) -> tuple[int, str]:
    """Run /etc/rc.d/S90onie-slot with ``cmdline`` over a grubenv holding ``env``."""
    grub = guest.onie_boot / "grub"
    grub.mkdir(parents=True, exist_ok=True)
    subprocess.run(["grub-editenv", grub / "grubenv", "create"], check=True)
    if env:
        subprocess.run(["grub-editenv", grub / "grubenv", "set",
                        *(f"{k}={v}" for k, v in env.items())], check=True)
    guest.cmdline.write_text(f"console=ttyS0 {cmdline}\n")
    rc = guest.install("S90onie-slot", guest.render("guest/etc/slot-rc.j2"))
    return out(guest.sh(str(rc)))


def test_slot_rc_confirms_a_trial_boot(x86: Guest) -> None:
    slot = x86.onie_boot / "onie" / "slot-b"
    slot.mkdir(parents=True)
    (slot / "version").write_text("x86_64-qemu_x86_64-r0 2026.11\n")
    before = {"onie_slot": "a", "onie_slot_a": "2026.10", "onie_slot_b": "2026.11",
              "onie_tried": "b", "onie_mode": "install"}
    assert slot_rc(x86, "boot_reason=install onie_slot=b onie_trial=b", before) == (
        0, "onie: update confirmed: slot b (ONIE 2026.11) reached discovery and boots by "
           "default now\n")
    assert grubenv(x86) == {"onie_slot": "b", "onie_slot_a": "2026.10", "onie_slot_b": "2026.11",
                            "onie_mode": "install"}
    assert (x86.onie_boot / "onie" / "version").read_text() == "x86_64-qemu_x86_64-r0 2026.11\n"


def test_slot_rc_says_a_trial_fell_back(x86: Guest) -> None:
    before = {"onie_slot": "a", "onie_slot_a": "2026.11", "onie_slot_b": "2026.12", "onie_tried": "b"}
    assert slot_rc(x86, "boot_reason=install onie_slot=a onie_fallback_from=b", before) == (
        0, "onie: the update to ONIE 2026.12 (slot b) did not reach discovery on its trial boot: "
           "running slot a (ONIE 2026.11), the previous version\n")
    assert grubenv(x86) == {"onie_slot": "a", "onie_slot_a": "2026.11", "onie_slot_b": "2026.12"}


def test_slot_rc_does_nothing_on_an_ordinary_boot(x86: Guest) -> None:
    before = {"onie_slot": "a", "onie_slot_a": "2026.11"}
    assert slot_rc(x86, "boot_reason=install onie_slot=a onie_trial=c", before) == (0, "")
    assert grubenv(x86) == before
