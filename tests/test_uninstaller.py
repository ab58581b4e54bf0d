"""onie-uninstaller and its rc script under the host's BusyBox ash (tests/guestcmd.py): the
refusals that come before any disk is touched, and when the rc script runs it. The erasing
itself runs on a real disk in tests/test_nos_install.py (QEMU, BIOS and UEFI, GPT and msdos).
Every run points the command at folders of the test (sysfs, /dev), never at the host's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.guestcmd import Guest, platform_recipe

# Stand-ins for the installer toolset: present, and failing if the command ever reached them.
TOOLSET = ("sgdisk", "parted", "partx", "blkid")
FAKE_TOOL = "#!/bin/sh\necho \"$0 $*\" >> \"$HOME/tool.calls\"\nexit 1\n"


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    root = tmp_path / "guest"
    return Guest(root, platform_recipe("qemu_x86_64"), sys_block=str(tmp_path / "sys-block"),
                 dev_dir=str(tmp_path / "dev"))


def test_renders_as_ash(guest: Guest, tmp_path: Path) -> None:
    for template in ("guest/commands/uninstaller.sh.j2", "guest/etc/uninstall-rc.j2"):
        script = tmp_path / "script.sh"
        script.write_text(guest.render(template))
        check = subprocess.run([guest.bin / "ash", "-n", script], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_refuses_without_the_toolset(guest: Guest) -> None:
    proc = guest.command("onie-uninstaller")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == ("onie-uninstaller: error: this image has no installer toolset (missing: sgdisk"
                           " parted partx blkid): it cannot uninstall (built with discovery_only?)\n")


def test_refuses_without_onie_boot(guest: Guest) -> None:
    for tool in TOOLSET:
        guest.install(tool, FAKE_TOOL)
    guest.mounts.write_text("proc /proc proc rw 0 0\n")
    proc = guest.command("onie-uninstaller")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (f"onie-uninstaller: error: ONIE-BOOT is not mounted at {guest.onie_boot}:"
                           " no disk of the environment to uninstall from\n")
    assert not (guest.root / "tool.calls").exists()


def test_refuses_a_mount_that_is_no_partition(guest: Guest, tmp_path: Path) -> None:
    for tool in TOOLSET:
        guest.install(tool, FAKE_TOOL)
    (tmp_path / "sys-block" / "vda2").mkdir(parents=True)  # no "partition" file: a whole disk
    guest.mounts.write_text(f"{tmp_path}/dev/vda2 {guest.onie_boot} ext4 rw 0 0\n")
    proc = guest.command("onie-uninstaller")
    assert (proc.returncode, proc.stderr) == (1, "onie-uninstaller: error: vda2 (ONIE-BOOT) is not a"
                                                 " partition\n")
    assert not (guest.root / "tool.calls").exists()


@pytest.mark.parametrize(("cmdline", "status", "calls", "said"), [
    ("console=ttyS0 boot_reason=install", 0, "", ""),
    ("console=ttyS0 boot_reason=uninstall", 0, "onie-uninstaller\n", ""),
    ("console=ttyS0 boot_reason=uninstall", 1, "onie-uninstaller\n",
     "onie-uninstaller: failed; nothing rebooted: the environment stays up (console shell)\n"),
])
def test_rc_script_runs_it_in_uninstall_mode(guest: Guest, cmdline: str, status: int, calls: str,
                                             said: str) -> None:
    guest.cmdline.write_text(cmdline + "\n")
    guest.install("onie-uninstaller", f"#!/bin/sh\necho \"${{0##*/}}\" >> \"$HOME/calls\"\nexit {status}\n")
    rc = guest.install("S10uninstall", guest.render("guest/etc/uninstall-rc.j2"))
    proc = guest.sh(f"exec {rc}")
    assert (proc.returncode, proc.stderr) == (0, said)
    calls_file = guest.root / "calls"
    assert (calls_file.read_text() if calls_file.exists() else "") == calls
