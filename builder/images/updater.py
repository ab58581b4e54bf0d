"""The updater: a self-extracting shell script that lays the environment out on a switch's disk.

Layout of the file: a script rendered from ``images/updater.sh.j2`` (it carries ONIE's
``ONIE-UPDATER-COOKIE``), then a tar.gz payload at the byte offset the script names, checked
against its sha256 before use. The payload holds the disk region's pieces (builder.images.disk):
the first MiB (protective MBR with GRUB's boot code, primary GPT), the backup GPT, and one
file system image per partition; the script writes them with ``dd`` (no partitioning tool, no
grub-install and no mounting on the switch). When the recipe names a key, the file is then
signed in the signed-installer format (builder.signing.format) as an "updater" image; the script
reads only its own bytes, so the appended signature block does not disturb it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from builder import __version__
from builder.errors import BuildError
from builder.files import public_mode
from builder.images import fit
from builder.images.context import BootLoaders, ImageContext
from builder.images.disk import MIB, SECTOR, Layout, make_gpt, make_layout
from builder.images.fat import make_vfat
from builder.images.grub import (
    MBR_CODE,
    make_boot_code,
    make_core,
    place_core,
    render_early_config,
    render_grubenv,
    render_menu,
)
from builder.recipe.formats import ImageFormat
from builder.recipe.model import Recipe
from builder.render import make_environment, render_template

BOOT_LABEL = "ONIE-BOOT"
WHY = "to build the updater's boot loaders"
BOOT_FOLDER = "onie-boot"  # in the payload: the files of the x86 ONIE-BOOT file system
SLOT_PATH = "onie/slot-${onie_run}"  # on ONIE-BOOT: the slot grub.cfg boots (a or b)
EXECUTABLES = frozenset({f"{BOOT_FOLDER}/onie/grub.d/50_onie_grub"})
# ONIE's menu titles (docs/onie-contract.md, G8) and the boot_reason each passes.
DISK_MODES = (("Install OS", "install"), ("Rescue", "rescue"), ("Uninstall OS", "uninstall"),
              ("Update ONIE", "update"), ("Embed ONIE", "embed"))


@dataclass(frozen=True)
class Piece:
    """A payload file written at a partition's first sector."""

    name: str  # the GPT partition name
    file: str  # the file in the payload
    start: int  # sectors
    data: bytes


def names(recipe: Recipe) -> list[str]:
    """The file ``make_updater`` writes."""
    return [updater_name(recipe)]


def updater_name(recipe: Recipe) -> str:
    """ONIE's name for the updater: ``onie-updater-<platform>``."""
    return f"onie-updater-{recipe.platform_string}"


def make_updater(recipe: Recipe, staging: Path, context: ImageContext) -> list[str]:
    """Write ``onie-updater-<platform>`` (signed when the recipe gives a key)."""
    out = staging / updater_name(recipe)
    key = recipe.images.updater.key
    if key is None:
        make_updater_file(recipe, context, out)
        return names(recipe)
    with tempfile.TemporaryDirectory(prefix="updater-") as tmp:
        unsigned = make_updater_file(recipe, context, Path(tmp) / out.name)
        sign_updater(recipe, context, unsigned, out, key)
    return names(recipe)


def sign_updater(recipe: Recipe, context: ImageContext, src: Path, dest: Path, key: Path) -> None:
    """Sign as an "updater" image for this platform; the version is SOURCE_DATE_EPOCH."""
    from builder.signing.format import ImageType, sign_installer
    from builder.signing.keys import load_private_key
    from builder.signing.signers import KeySigner

    if not key.is_file():
        raise BuildError(f"images.updater.key: {key}: no such file")
    sign_installer(src, dest, KeySigner(load_private_key(key)), image=ImageType.UPDATER,
                   version=context.source_date_epoch, platforms=(recipe.platform_string,))


def make_updater_file(recipe: Recipe, context: ImageContext, out: Path) -> Path:
    """The unsigned self-extracting updater."""
    layout = make_layout(recipe.platform.arch.value, recipe.images.boot_size_mib,
                         recipe.images.partition_type.value)
    boot_files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="updater-") as tmp:
        work = Path(tmp)
        head, tail = make_gpt(layout, recipe.platform_string, work)
        if recipe.platform.arch.value == "x86_64":
            head, pieces = make_x86_pieces(recipe, context, layout, head)
            boot_files = {**make_boot_files(recipe, context), **make_restore_files(layout, head, pieces)}
        else:
            pieces = make_arm64_pieces(recipe, context, layout, work)
    files = {"head.img": head, "tail.img": tail, **{p.file: p.data for p in pieces},
             **{f"{BOOT_FOLDER}/{name}": data for name, data in boot_files.items()}}
    payload = make_payload(files, context.source_date_epoch, executable=EXECUTABLES)
    script = render_script(recipe, layout, pieces, payload, boot_files)
    out.write_bytes(script + payload)
    out.chmod(public_mode(executable=True))
    return out


def make_x86_pieces(recipe: Recipe, context: ImageContext, layout: Layout,
                    head: bytes) -> tuple[bytes, list[Piece]]:
    """GRUB for BIOS (boot code + core image in GRUB-BOOT) and UEFI (the ESP). ONIE-BOOT is
    ext4, made on the switch (``make_boot_files``): a NOS installer mounts and reads it there."""
    loaders = context.boot_loaders(
        ImageFormat.UPDATER, lambda: make_boot_loaders(recipe, context.source_date_epoch))
    core = loaders["core.img"]
    if layout.table == "msdos":
        # ONIE's msdos layout: the core image in the gap between the MBR and partition 1.
        if len(core) > (MIB - 1) * SECTOR:
            raise BuildError(f"the GRUB core image ({len(core)} bytes) does not fit the MBR gap")
        code = make_boot_code(1)
        gap = place_core(core, 1)
        head = code + head[len(code):SECTOR] + gap + head[SECTOR + len(gap):]
        return head, []
    bios = layout.find("GRUB-BOOT")
    if len(core) > bios.size * SECTOR:
        raise BuildError(f"the GRUB core image ({len(core)} bytes) does not fit the GRUB-BOOT partition")
    code = make_boot_code(bios.start)
    head = code + head[len(code):]
    esp = layout.find("EFI System")
    return head, [Piece(bios.name, "bios.img", bios.start, place_core(core, bios.start)),
                  Piece(esp.name, "esp.img", esp.start, loaders["esp.img"])]


def make_boot_loaders(recipe: Recipe, epoch: int) -> BootLoaders:
    """GRUB's core images for an x86 disk: ``core.img`` (BIOS) and, on GPT, ``esp.img`` (the
    EFI system partition holding the UEFI one); none for arm64 (its FIT holds the kernel).
    They need neither the kernel nor the initramfs, so a build makes them while it assembles
    the tree (``builder.images.start_early``)."""
    if recipe.platform.arch.value != "x86_64":
        return {}
    early = render_early_config(BOOT_LABEL)
    with tempfile.TemporaryDirectory(prefix="updater-boot-") as tmp:
        work = Path(tmp)
        core = make_core("i386-pc", "i386-pc", work / "core.img", early, "/grub", WHY)
        loaders = {"core.img": core.read_bytes()}
        if recipe.images.partition_type.value == "msdos":  # no ESP on ONIE's msdos layout
            return loaders
        efi = make_core("x86_64-efi", "x86_64-efi", work / "BOOTX64.EFI", early, "/grub", WHY)
        esp = make_vfat(work / "esp.img", {"EFI/BOOT/BOOTX64.EFI": efi}, "EFI",
                        f"{recipe.platform_string}:esp", epoch)
        return {**loaders, "esp.img": esp.read_bytes()}


def make_boot_files(recipe: Recipe, context: ImageContext) -> dict[str, bytes]:
    """What goes onto the x86 ONIE-BOOT file system (docs/onie-contract.md): the kernel and
    initramfs (``onie/slot/``: the updater puts them in slot a or b), GRUB's menu and
    environment block (slot a confirmed), and ``onie/grub.d/50_onie_grub``."""
    menu = render_menu(recipe, {
        "medium": "disk", "kernel": f"/{SLOT_PATH}/vmlinuz", "modes": True, "slots": True,
        "entries": disk_entries(context)})
    env = make_environment(recipe.templates)
    grub_d = render_template(env, "images/50_onie_grub.j2", {
        "platform": recipe.platform, "builder_version": __version__})
    version = f"{recipe.platform_string} {recipe.version}\n".encode()
    return {"grub/grub.cfg": menu.encode(),
            "grub/grubenv": render_grubenv({"onie_slot": "a", "onie_slot_a": recipe.version}),
            "onie/grub.d/50_onie_grub": grub_d.encode(),
            "onie/slot/vmlinuz": context.kernel.read_bytes(),
            "onie/slot/initrd.img": context.initramfs.read_bytes(),
            "onie/slot/version": version,
            "onie/version": version}


def make_restore_files(layout: Layout, head: bytes, pieces: list[Piece]) -> dict[str, bytes]:
    """ONIE's boot loader as laid out, kept on ONIE-BOOT in ``onie/boot/`` for
    onie-uninstaller, which writes it back over a NOS's (docs/modes.md): the MBR's boot code,
    on msdos the core image in the MBR gap, and each partition piece (GRUB-BOOT, the ESP),
    gzip'd (they are mostly zeros) and listed in ``onie/boot/pieces`` by start sector."""
    files = {"onie/boot/boot-code.bin": head[:MBR_CODE]}
    index = []
    # Level 6, not 9: the 2 MiB ESP took 0.22 s at 9 and takes 0.03 s at 6, 2 % larger, on the
    # way to the updater and the ISO that embeds it.
    if layout.table == "msdos":
        files["onie/boot/mbr-gap.img.gz"] = gzip.compress(head[SECTOR:MIB * SECTOR], 6, mtime=0)
    for piece in pieces:
        files[f"onie/boot/{piece.file}.gz"] = gzip.compress(piece.data, 6, mtime=0)
        index.append(f"{piece.start} {piece.file}.gz {piece.name}\n")
    files["onie/boot/pieces"] = "".join(index).encode()
    return files


def make_arm64_pieces(recipe: Recipe, context: ImageContext, layout: Layout,
                      work: Path) -> list[Piece]:
    """ONIE-BOOT with the FIT and the u-boot script that distro boot finds on it."""
    itb = fit.make_fit_image(recipe, context, work / fit.FIT_NAME)
    script = fit.make_boot_script(recipe, context, work / fit.SCRIPT_NAME)
    files: dict[str, Path | bytes] = {fit.FIT_NAME: itb, fit.SCRIPT_NAME: script}
    return [make_boot_piece(recipe, context, layout, files, work)]


def make_boot_piece(recipe: Recipe, context: ImageContext, layout: Layout,
                    files: dict[str, Path | bytes], work: Path) -> Piece:
    """The ONIE-BOOT file system image, checked against its partition's size."""
    part = layout.find(BOOT_LABEL)
    files["onie/version"] = f"{recipe.platform_string} {recipe.version}\n".encode()
    image = make_vfat(work / "onie-boot.img", files, BOOT_LABEL,
                      f"{recipe.platform_string}:boot", context.source_date_epoch)
    size = image.stat().st_size
    if size > part.size * SECTOR:
        raise BuildError(f"images.boot_size_mib: ONIE-BOOT needs {-(-size // (MIB * SECTOR))} MiB, "
                         f"got {recipe.images.boot_size_mib}")
    return Piece(part.name, "onie-boot.img", part.start, image.read_bytes())


def disk_entries(context: ImageContext) -> list[dict[str, object]]:
    """The GRUB menu of an installed disk: ONIE's five modes with ONIE's titles (install is
    the default; each entry's id is its mode, which grubenv's ``onie_mode`` names), booting
    the slot chosen by grub.cfg's slot logic, then install mode of the other slot's version
    when it holds one (the fallback entry)."""
    raw = ["onie_slot=$onie_run", "onie_grubenv_mode=$onie_picked", "$onie_trying", "$onie_fell_back"]
    entries: list[dict[str, object]] = [
        {"title": f"ONIE: {title}", "id": mode, "initrds": [f"/{SLOT_PATH}/initrd.img"],
         "cmdline": [*context.cmdline.split(), f"boot_reason={mode}"], "raw": raw}
        for title, mode in DISK_MODES]
    other = "/onie/slot-${onie_other}"
    entries.append({
        "title": "ONIE: Install OS (previous version)", "id": "previous",
        "title_grub": '"ONIE: Install OS (previous version $onie_other_version)"',
        "loading_grub": '"Loading ONIE $onie_other_version from slot $onie_other ..."',
        "comment": "The other slot's version, when it holds one: the way back after an update.",
        "when": '[ -n "$onie_other_version" ]',
        "kernel": f"{other}/vmlinuz", "initrds": [f"{other}/initrd.img"],
        "cmdline": [*context.cmdline.split(), "boot_reason=install"],
        "raw": ["onie_slot=$onie_other", "onie_grubenv_mode=none"]})
    return entries


def make_payload(files: dict[str, bytes], epoch: int, executable: frozenset[str] = frozenset()) -> bytes:
    """A deterministic tar.gz: sorted names, owner 0:0, every time ``epoch``; the names in
    ``executable`` get mode 0755, the others 0644."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = epoch
            info.mode = 0o755 if name in executable else 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    # Run-length matching only (zlib's Z_RLE): most of the payload is the kernel and the
    # initramfs, already compressed, and what compresses is the partitions' zero-filled free
    # space. Measured on the default updater: 1.1% larger than gzip -6, in 0.16 s instead of
    # 0.39 s of every build. wbits 31 writes the gzip wrapper (mtime 0, no name).
    packer = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_RLE)
    return packer.compress(raw.getvalue()) + packer.flush()


def render_script(recipe: Recipe, layout: Layout, pieces: list[Piece], payload: bytes,
                  boot_files: dict[str, bytes]) -> bytes:
    """The script with the payload's offset (its own length), size and sha256 filled in."""
    env = make_environment(recipe.templates)
    values = {"platform": recipe.platform, "version": recipe.version,
              "builder_version": __version__, "layout": layout, "pieces": pieces,
              "boot_code": recipe.platform.arch.value == "x86_64",
              "boot_folder": BOOT_FOLDER if boot_files else None,
              "table": layout.table,
              "boot_partition": layout.partitions.index(layout.find(BOOT_LABEL)) + 1,
              "payload_size": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    offset = 0
    while True:  # the offset is the script's own length: a fixed point in a step or two
        script = render_template(env, "images/updater.sh.j2", {**values, "offset": offset}).encode()
        if len(script) == offset:
            return script
        offset = len(script)
