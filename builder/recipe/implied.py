"""What a recipe implies: the Debian components and kernel modules its settings bring along.

The resolver adds these to the recipe's own components; the initramfs stage loads the modules.
Derived from the recipe alone, so components never reach up into the initramfs stage.
"""

from __future__ import annotations

from builder.recipe.component import Component
from builder.recipe.model import Arch, Recipe

# docs/lab.md: iscsi_tcp fails with "iferror -12" unless crc32c_generic is loaded first; sd_mod
# brings the LUN's disk, ext4 (which mounts ext2/3) and vfat its filesystems.
ISCSI_MODULES = ("crc32c_generic", "iscsi_tcp", "sd_mod", "ext4", "vfat")
ISCSI_BINARIES = ("/sbin/iscsistart",)
ISNS_BINARIES = ("/usr/sbin/isnsadm",)
# UEFI installers (efibootmgr, efivar; docs/onie-contract.md F9) need efivarfs, a module in
# Debian's kernels: /init mounts it when booted by UEFI and the kernel loads it for that mount.
UEFI_MODULE = "efivarfs"
# SSH (builder/recipe/ssh.py): Debian's dropbear server and its key generator for the host key.
SSH_BINARIES = ("/usr/sbin/dropbear", "/usr/bin/dropbearkey")


def implied_components(recipe: Recipe) -> list[Component]:
    """The Debian components the enabled transports and SSH need, unless the recipe already
    has them."""
    wanted: list[tuple[str, tuple[str, ...]]] = []
    if recipe.transports.https.ca:
        wanted.append(("openssl", ("/usr/bin/openssl",)))
    if recipe.transports.iscsi.enabled:
        wanted.append(("open-iscsi", ISCSI_BINARIES))
        wanted.append(("open-isns-utils", ISNS_BINARIES))
    if recipe.transports.ipv6.enabled and recipe.transports.ipv6.dhcpv6:
        wanted.append(("dhcpcd-base", ("/usr/sbin/dhcpcd",)))
    if recipe.ssh.on:
        wanted.append(("dropbear-bin", SSH_BINARIES))
    have = {b for c in (*recipe.initramfs.components, *(c for _, c in recipe.initramfs.tools))
            for b in c.binaries}
    return [Component(debian=name, binaries=[b for b in binaries if b not in have])
            for name, binaries in wanted if not set(binaries) <= have]


def implied_modules(recipe: Recipe) -> list[str]:
    """Kernel modules the enabled transports and the installer toolset need (iSCSI's in the
    order they are loaded); /init loads none of them by itself."""
    wanted = list(ISCSI_MODULES) if recipe.transports.iscsi.enabled else []
    if recipe.platform.arch is Arch.X86_64 and recipe.initramfs.tools:
        wanted.append(UEFI_MODULE)
    return [m for m in dict.fromkeys(wanted) if m not in recipe.kernel.modules]
