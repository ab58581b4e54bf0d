"""The network-boot bundle: kernel, initramfs, an iPXE script and a GRUB network-boot menu."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.errors import BuildError
from builder.images.context import ImageContext
from builder.images.grub import serial_unit
from builder.recipe.model import Recipe
from builder.render import make_environment, render_template

FOLDER = "netboot"
# Characters iPXE's script parser treats specially; a command line with them is refused.
IPXE_SPECIAL = set("$#\"'\\")


def make_netboot(recipe: Recipe, staging: Path, context: ImageContext) -> list[str]:
    """Write ``netboot/{vmlinuz,initrd.img,boot.ipxe,grub.cfg}``."""
    folder = staging / FOLDER
    folder.mkdir(exist_ok=True)
    link_or_copy(context.kernel, folder / "vmlinuz")
    link_or_copy(context.initramfs, folder / "initrd.img")
    env = make_environment(recipe.templates)
    words = [*context.cmdline.split(), "boot_reason=install"]
    if bad := [w for w in words if IPXE_SPECIAL & set(w)]:
        raise BuildError(f"kernel.cmdline: {bad[0]!r} cannot go into an iPXE script "
                         f"(no $, #, quotes or backslashes)")
    values = {"platform": recipe.platform, "version": recipe.version, "cmdline": words}
    (folder / "boot.ipxe").write_text(render_template(env, "images/boot.ipxe.j2", values))
    entries = [{"title": f"ONIE: {title} ({recipe.platform_string}, network)",
                "cmdline": [*context.cmdline.split(), f"boot_reason={mode}"]}
               for title, mode in (("Install OS", "install"), ("Rescue", "rescue"))]
    grub = render_template(env, "images/grub-netboot.cfg.j2", {
        **values, "entries": entries, "serial_unit": serial_unit(recipe),
        "speed": recipe.platform.console.speed, "timeout": recipe.images.grub_timeout})
    (folder / "grub.cfg").write_text(grub)
    return names(recipe)


def names(recipe: Recipe) -> list[str]:
    """The files ``make_netboot`` writes."""
    return [f"{FOLDER}/{name}" for name in ("vmlinuz", "initrd.img", "boot.ipxe", "grub.cfg")]


def link_or_copy(src: Path, dest: Path) -> None:
    """A hard link when on the same file system (the staging folder), else a copy."""
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
