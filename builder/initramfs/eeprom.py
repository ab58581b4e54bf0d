"""The EEPROM in the image: a virtual EEPROM's TlvInfo bytes, encoded at build time from the
recipe's ``platform.eeprom.fields`` with ``builder.onie.tlvinfo``, and the paths the guest's
EEPROM library (templates/guest/lib/eeprom.sh.j2) is rendered with.

At run time a virtual EEPROM is read from the first of these that exists: the copy saved on
ONIE-BOOT, the copy in RAM (both written by ``onie-syseeprom -s``/``-e``), the VM's QEMU
fw_cfg blob ``opt/onie/eeprom``, and the image's own default (docs/onie-contract.md, "EEPROM
sources").
"""

from __future__ import annotations

from typing import Any

from builder.initramfs.tree import Tree
from builder.onie.tlvinfo import encode
from builder.recipe.eeprom import EepromSource
from builder.recipe.model import Recipe

FW_CFG_MODULE = "qemu_fw_cfg"
"""The module that shows fw_cfg items in /sys/firmware/qemu_fw_cfg (the qemu recipes list it)."""

FW_CFG_NAME = "opt/onie/eeprom"
"""The fw_cfg item a VM's EEPROM override goes in: ``-fw_cfg name=opt/onie/eeprom,file=X``."""

PATHS = {
    "mounts": "/proc/mounts",  # whether ONIE-BOOT is mounted
    "dmi": "/sys/class/dmi/id",  # serial number and product name on x86 without them in the EEPROM
    "net": "/sys/class/net",  # eth0's MAC without one in the EEPROM
    "builtin": "/etc/onie/eeprom.bin",  # the virtual EEPROM's default, read-only
    "fw_cfg": f"/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_NAME}/raw",
    "ram": "/run/onie/eeprom.bin",  # writes when ONIE-BOOT is not mounted (lost at reboot)
    "onie_boot": "/mnt/onie-boot",
    "saved": "/mnt/onie-boot/onie/config/eeprom.bin",  # writes when ONIE-BOOT is mounted
}


def make_image(recipe: Recipe) -> bytes | None:
    """The virtual EEPROM's TlvInfo image; None for an EEPROM the guest reads from hardware."""
    eeprom = recipe.platform.eeprom
    if eeprom.source is not EepromSource.VIRTUAL:
        return None
    return encode(eeprom.fields.tlvs(recipe.platform_string, recipe.version))


def install_eeprom(tree: Tree, recipe: Recipe) -> None:
    """Put the virtual EEPROM's default image at /etc/onie/eeprom.bin."""
    image = make_image(recipe)
    if image is not None:
        tree.add_file(PATHS["builtin"], data=image, mode=0o444, origin="eeprom:platform.eeprom")


def template_values(recipe: Recipe) -> dict[str, Any]:
    """What guest/lib/eeprom.sh.j2 and guest/init.j2 need: the source and the paths."""
    eeprom = recipe.platform.eeprom
    return {"eeprom": {
        "source": eeprom.source.value,
        "file": eeprom.file,
        # /init loads it before anything reads the EEPROM, when the recipe has it.
        "module": FW_CFG_MODULE if eeprom.source is EepromSource.VIRTUAL
                  and FW_CFG_MODULE in recipe.kernel.modules else "",
        "paths": PATHS,
        "empty_crc": int.from_bytes(encode([])[-4:], "big"),
    }}
