"""The u-boot FIT (``.itb``): gzip'd kernel, initramfs, optional device tree, one configuration
named after the platform, sha256 hashes, and a configuration signature when the recipe gives
a key; plus the boot script u-boot runs from TFTP or from a disk.
"""

from __future__ import annotations

import functools
import gzip
import shutil
import tempfile
from pathlib import Path

from builder.errors import BuildError
from builder.files import FileRefused, read_bounded
from builder.images.context import ImageContext
from builder.process import find_tool, run
from builder.recipe.model import Recipe
from builder.render import make_environment, render_template

FIT_NAME = "onie.itb"
SCRIPT_NAME = "boot.scr.uimg"  # the name u-boot's dhcp boot asks the TFTP server for
FOLDER = "fit"
WHY = "to build u-boot FIT images (Debian package u-boot-tools, with device-tree-compiler)"


def make_fit(recipe: Recipe, staging: Path, context: ImageContext) -> list[str]:
    """Write ``fit/onie.itb`` and ``fit/boot.scr.uimg`` into the staging folder."""
    folder = staging / FOLDER
    folder.mkdir(exist_ok=True)
    make_fit_image(recipe, context, folder / FIT_NAME)
    make_boot_script(recipe, context, folder / SCRIPT_NAME)
    return names(recipe)


def names(recipe: Recipe) -> list[str]:
    """The files ``make_fit`` writes."""
    return [f"{FOLDER}/{FIT_NAME}", f"{FOLDER}/{SCRIPT_NAME}"]


def config_name(recipe: Recipe) -> str:
    """The FIT configuration: one per platform, named by its platform string."""
    return recipe.platform_string


def find_dtb(recipe: Recipe, context: ImageContext) -> Path | None:
    """The device tree for the FIT: the recipe's file, one from the kernel package, or none."""
    fit = recipe.images.fit
    if fit.dtb is not None:
        if not fit.dtb.is_file():
            raise BuildError(f"images.fit.dtb: {fit.dtb}: no such file")
        return fit.dtb
    if fit.kernel_dtb is None:
        return None
    folder = Path("usr/lib") / f"linux-image-{context.kernel_release}" / fit.kernel_dtb
    for root in context.kernel_roots:
        if (root / folder).is_file():
            return root / folder
    raise BuildError(f"images.fit.kernel_dtb: the kernel package {context.kernel_release} "
                     f"has no /{folder}")


def key_bits(key: Path) -> int:
    """The size of the recipe's RSA signing key (mkimage signs with RSA)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        private = load_pem_private_key(read_bounded(key, 1 << 20), password=None)
    except (FileRefused, ValueError, TypeError) as exc:
        raise BuildError(f"images.fit.key: {key}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, rsa.RSAPrivateKey) or private.key_size not in (2048, 3072, 4096):
        raise BuildError(f"images.fit.key: {key}: expected an RSA key of 2048, 3072 or 4096 bits")
    return int(private.key_size)


@functools.lru_cache(maxsize=2)
def gzip_kernel(path: str, size: int, mtime_ns: int) -> bytes:
    """The kernel gzip'd once per build (the FIT and the updater's FIT share it).

    The Debian arm64 kernel is an uncompressed Image; u-boot inflates it at load time.
    """
    del size, mtime_ns  # part of the cache key only
    return gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)


def dts_string(value: str) -> str:
    """A value made safe inside a DTS string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def make_fit_image(recipe: Recipe, context: ImageContext, out: Path) -> Path:
    """Run mkimage on a generated .its; sign the configuration when the recipe has a key."""
    mkimage = find_tool("mkimage", WHY)
    find_tool("dtc", WHY)
    key = recipe.images.fit.key
    with tempfile.TemporaryDirectory(prefix="fit-") as tmp:
        work = Path(tmp)
        kernel = work / "Image.gz"
        stat = context.kernel.stat()
        kernel.write_bytes(gzip_kernel(str(context.kernel), stat.st_size, stat.st_mtime_ns))
        dtb = find_dtb(recipe, context)
        values = {
            "platform": recipe.platform,
            "version": dts_string(recipe.version),
            "kernel_release": dts_string(context.kernel_release),
            # dtc reads /incbin/ paths relative to the .its, which lies in this temporary
            # folder: every path it names must be absolute (`--out out` is relative).
            "kernel": kernel.absolute(), "initramfs": context.initramfs.absolute(),
            "dtb": dtb.absolute() if dtb else None,
            "dtb_name": dts_string(dtb.name) if dtb else "",
            "load_address": recipe.images.fit.load_address,
            "config": config_name(recipe),
            "key_name": key.stem if key else "",
            "key_bits": key_bits(key) if key else 0,
        }
        its = work / "onie.its"
        its.write_text(render_template(make_environment(recipe.templates), "images/fit.its.j2", values))
        argv: list[str | Path] = [mkimage, "-f", its]
        if key is not None:
            keydir = work / "keys"
            keydir.mkdir()
            shutil.copyfile(key, keydir / f"{key.stem}.key")
            argv += ["-k", keydir]
        run([*argv, out], env=context.env)
    return out


def make_boot_script(recipe: Recipe, context: ImageContext, out: Path) -> Path:
    """The u-boot script (``mkimage -T script``) that loads the FIT and boots it."""
    mkimage = find_tool("mkimage", WHY)
    cmdline = f"{context.cmdline} boot_reason=install"
    if "'" in cmdline:
        raise BuildError(f"kernel.cmdline: a u-boot boot script cannot carry a single quote, "
                         f"got {cmdline!r}")
    text = render_template(make_environment(recipe.templates), "images/boot.cmd.j2", {
        "platform": recipe.platform, "cmdline": cmdline, "fit_name": FIT_NAME,
        "fit_address": recipe.images.fit.fit_address, "config": config_name(recipe),
        "has_dtb": find_dtb(recipe, context) is not None,
    })
    with tempfile.TemporaryDirectory(prefix="bootscr-") as tmp:
        source = Path(tmp) / "boot.cmd"
        source.write_text(text)
        run([mkimage, "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none",
             "-n", f"ONIE {recipe.platform_string}"[:32], "-d", source, out], env=context.env)
    return out
