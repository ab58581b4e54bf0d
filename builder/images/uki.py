"""The UEFI unified kernel image: systemd's EFI stub with .osrel, .cmdline, .linux and .initrd.

Made with objcopy (systemd 252 has no ukify), each section placed right after the previous
one. objcopy stamps the PE header with the wall clock: the time stamp is reset to
SOURCE_DATE_EPOCH and the checksum recomputed. With a key, the image is signed for Secure
Boot by osslsigncode with ``-time`` set to SOURCE_DATE_EPOCH (sbsign writes the wall clock
into the signature, so its output differs on every run).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from builder.errors import BuildError
from builder.images.context import ImageContext
from builder.images.pe import read_layout, set_timestamp
from builder.process import find_tool, run
from builder.recipe.model import Recipe

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
FOLDER = "uki"
NAME = "onie.efi"
PAGE = 4096


def make_uki(recipe: Recipe, staging: Path, context: ImageContext) -> list[str]:
    """Write ``uki/onie.efi`` (signed when the recipe gives a Secure Boot key)."""
    folder = staging / FOLDER
    folder.mkdir(exist_ok=True)
    out = folder / NAME
    make_uki_image(context, out, f"{context.cmdline} boot_reason=install")
    uki = recipe.images.uki
    if uki.secureboot_key is not None and uki.secureboot_cert is not None:
        sign_image(out, uki.secureboot_key, uki.secureboot_cert, context)
    return names(recipe)


def names(recipe: Recipe) -> list[str]:
    """The file ``make_uki`` writes."""
    return [f"{FOLDER}/{NAME}"]


def find_stub() -> Path:
    """systemd's x86_64 EFI stub."""
    if not STUB.is_file():
        raise BuildError(f"Could not find {STUB}, which is required to build UEFI unified "
                         "kernel images", hint="install the Debian package systemd-boot-efi")
    return STUB


def make_uki_image(context: ImageContext, out: Path, cmdline: str) -> Path:
    """objcopy the stub with the four sections, then make its header reproducible."""
    objcopy = find_tool("objcopy", "to build UEFI unified kernel images (Debian package binutils)")
    stub = find_stub()
    layout = read_layout(stub)
    with tempfile.TemporaryDirectory(prefix="uki-") as tmp:
        osrel = Path(tmp) / "os-release"
        osrel.write_text(context.os_release)
        line = Path(tmp) / "cmdline"
        line.write_text(cmdline + "\n")
        argv: list[str | Path] = [objcopy]
        rva = layout.end
        for name, path in ((".osrel", osrel), (".cmdline", line), (".linux", context.kernel),
                           (".initrd", context.initramfs)):
            vma = layout.image_base + -(-rva // PAGE) * PAGE
            argv += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}={vma:#x}"]
            rva = vma - layout.image_base + path.stat().st_size
        run([*argv, stub, out], env=context.env)
    set_timestamp(out, context.source_date_epoch)
    return out


def sign_image(image: Path, key: Path, cert: Path, context: ImageContext) -> None:
    """Sign ``image`` in place for Secure Boot (Authenticode, sha256)."""
    tool = find_tool("osslsigncode", "to sign UEFI images for Secure Boot (Debian package osslsigncode)")
    for what, path in (("secureboot_key", key), ("secureboot_cert", cert)):
        if not path.is_file():
            raise BuildError(f"images.uki.{what}: {path}: no such file")
    signed = image.with_name(image.name + ".signed")
    run([tool, "sign", "-certs", cert, "-key", key, "-h", "sha256",
         "-time", str(context.source_date_epoch), "-in", image, "-out", signed], env=context.env)
    signed.replace(image)
