"""Helpers for the image boot tests: firmware command lines, GRUB menus, console checks."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

from builder.lab.qemu import Console
from tests.conftest import fail_or_skip, require_qemu

OVMF_DIR = Path("/usr/share/OVMF")
UBOOT_ARM64 = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
_subnets = itertools.count()

# The environment's discovery engine announces itself with this line (templates/guest/discovery.sh.j2).
DISCOVERY = r"onie-discovery: start platform=(\S+) mode=(\S+)\s"


def subnet() -> str:
    """A 10.200.N prefix of our own: 200-249, away from the other lab tests' ranges."""
    return f"10.200.{200 + (os.getpid() + next(_subnets)) % 50}"


def require_file(path: Path, package: str) -> Path:
    if not path.is_file():
        fail_or_skip(f"{path} is missing (Debian package {package})")
    return path


def x86_command(*args: str) -> list[str]:
    """qemu-system-x86_64 under TCG, serial console on stdio, no reboot, no NIC unless given."""
    return [require_qemu("x86_64"), "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot",
            "-serial", "mon:stdio", *args]


def ovmf_args(tmp: Path, *, secure: bool = False, varstore: Path | None = None) -> list[str]:
    """q35 + OVMF (4M), with PXE and IPv6 network boot off (each costs about a minute)."""
    code = OVMF_DIR / ("OVMF_CODE_4M.secboot.fd" if secure else "OVMF_CODE_4M.fd")
    require_file(code, "ovmf")
    vars_copy = tmp / "OVMF_VARS.fd"
    shutil.copyfile(varstore or require_file(OVMF_DIR / "OVMF_VARS_4M.fd", "ovmf"), vars_copy)
    machine = ["-M", "q35,smm=on" if secure else "q35", "-m", "1024"]
    if secure:
        machine += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return [*machine,
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
            "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
            "-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no"]


def choose_grub_entry(console: Console, index: int, timeout: float = 120) -> None:
    """Wait for a GRUB menu on the serial console and start entry ``index`` (0 = first)."""
    console.expect(r"Use the .* keys to select", timeout)
    for _ in range(index):
        console.send("\x1b[B")  # cursor down (vt100), as GRUB's serial terminal reads it
    console.send("\r")


def expect_environment(console: Console, platform: str, timeout: float = 180) -> re.Match[str]:
    """Wait for the environment's banner and then for discovery to start; return that match."""
    banner = console.expect(r"ONIE environment (\S+) for (\S+)\r?\n", timeout)
    assert banner.group(2) == platform, banner.group(0)
    return console.expect(DISCOVERY, 60)


def fat_read(image: Path, offset: int, path: str) -> bytes:
    """Read one file from a FAT file system at byte ``offset`` of ``image`` (mtools)."""
    proc = subprocess.run(["mtype", "-i", f"{image}@@{offset}", f"::{path}"],
                          capture_output=True, check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return proc.stdout


def ext4_read(image: Path, start: int, size: int, path: str) -> bytes:
    """Read one file from the ext4 file system of a partition (``start``, ``size`` in bytes)
    of ``image``, with e2fsprogs' debugfs on a copy of the partition."""
    part = image.with_name(image.name + f".part{start}")
    with image.open("rb") as src, part.open("wb") as dst:
        src.seek(start)
        dst.write(src.read(size))
    try:
        proc = subprocess.run(["debugfs", "-R", f"cat {path}", str(part)], capture_output=True,
                              check=True)
        if proc.stderr.strip() and b"debugfs " not in proc.stderr:
            raise AssertionError(f"debugfs: {proc.stderr.decode(errors='replace')}")
        return proc.stdout
    finally:
        part.unlink()


def partition_bytes(table_entry: dict[str, object]) -> tuple[int, int]:
    """(start, size) in bytes of a partition from ``sfdisk -J``."""
    return int(table_entry["start"]) * 512, int(table_entry["size"]) * 512  # type: ignore[call-overload]
