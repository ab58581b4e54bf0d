"""The mode line (#17): /init's boot_mode (templates/guest/lib/mode.sh.j2) under BusyBox ash,
for each way a mode reaches the kernel command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guestcmd import Guest, platform_recipe


@pytest.mark.parametrize(("cmdline", "line"), [
    ("console=ttyS0", "onie: install mode: no boot_reason on the kernel command line: install is "
                      "the default"),
    ("console=ttyS0 boot_reason=rescue", "onie: rescue mode: boot_reason=rescue on the kernel "
                                         "command line"),
    ("boot_reason=update onie_slot=a onie_grubenv_mode=none",
     "onie: update mode: boot_reason=update from ONIE's GRUB menu (its default entry, or chosen "
     "there)"),
    ("boot_reason=uninstall onie_grubenv_mode=uninstall",
     "onie: uninstall mode: boot_reason=uninstall from GRUB: onie_mode=uninstall in ONIE-BOOT's "
     "grubenv made it the default entry"),
    ("boot_reason=install onie_grubenv_mode=update",
     "onie: install mode: boot_reason=install from ONIE's GRUB menu (its default entry, or chosen "
     "there)"),
    ("boot_reason=embed onie_uboot_mode=embed",
     "onie: embed mode: boot_reason=embed from u-boot: onie_boot_reason=embed in its environment"),
    ("boot_reason=diag", "onie: install mode: boot_reason=diag is not a mode (install, rescue, "
                         "uninstall, update, embed): install instead"),
    ("boot_reason=$(reboot) boot_reason=*", "onie: install mode: boot_reason=(unprintable) is not "
                                            "a mode (install, rescue, uninstall, update, embed): "
                                            "install instead"),
])
def test_mode_line(tmp_path: Path, cmdline: str, line: str) -> None:
    guest = Guest(tmp_path, platform_recipe("qemu_x86_64"))
    script = tmp_path / "mode.sh"
    script.write_text(guest.render("guest/lib/mode.sh.j2"))
    proc = guest.sh(f'. {script}; boot_mode "$1"; echo "boot_reason=$boot_reason"', cmdline)
    assert (proc.returncode, proc.stderr) == (0, "")
    reason = line.split(" ")[1]
    assert proc.stdout == f"{line}\nboot_reason={reason}\n"
