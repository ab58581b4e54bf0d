"""The hybrid recovery ISO booted for real: SeaBIOS as a disk (written as with dd) and OVMF as
a CD. Its embed entry, and the disk it lays out, are booted by tests/test_update_boot.py
(update mode, A/B slots) and tests/test_nos_install.py (a NOS installed, uninstall)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.lab.qemu import Console
from tests.conftest import require_tool
from tests.imagelab import (
    choose_grub_entry,
    expect_environment,
    ovmf_args,
    x86_command,
)

pytestmark = [pytest.mark.lab, pytest.mark.network]

PLATFORM = "x86_64-qemu_x86_64-r0"
ISO = f"onie-recovery-{PLATFORM}.iso"
UPDATER = f"onie-updater-{PLATFORM}"


@pytest.fixture(scope="module")
def image(built: Callable[[str], Path]) -> Path:
    require_tool("xorriso", "to build ISO images")
    return built("qemu_x86_64")


def partitions(disk: Path) -> dict[str, dict[str, object]]:
    table = json.loads(subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True,
                                      check=True, text=True).stdout)["partitiontable"]
    return {p["name"]: p for p in table["partitions"]}


def test_iso_boots_as_a_usb_disk_under_bios(image: Path, tmp_path: Path) -> None:
    stick = tmp_path / "stick.img"
    stick.write_bytes((image / ISO).read_bytes())  # what `dd if=x.iso of=/dev/sdX` writes
    argv = x86_command("-drive", f"file={stick},format=raw,if=ide", "-nic", "none")
    with Console.start(argv, tmp_path / "console.log") as console:
        choose_grub_entry(console, 1)  # Rescue
        found = expect_environment(console, PLATFORM)
        assert found.group(2) == "rescue"


def test_iso_boots_under_uefi(image: Path, tmp_path: Path) -> None:
    argv = x86_command(*ovmf_args(tmp_path), "-cdrom", str(image / ISO), "-nic", "none")
    with Console.start(argv, tmp_path / "console.log") as console:
        found = expect_environment(console, PLATFORM, timeout=300)
        assert found.group(2) == "install"
