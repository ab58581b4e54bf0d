"""Deterministic newc cpio archives of the file tree, compressed the way the kernel can unpack."""

from __future__ import annotations

import enum
import gzip
import hashlib
import lzma
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from builder.errors import BuildError
from builder.files import public_mode
from builder.initramfs.tree import Entry, Kind, Tree
from builder.recipe.formats import Compression

# The newc header (Documentation/driver-api/early-userspace/buffer-format.rst): the magic and
# 13 fields of 8 hex digits: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
# rdevmajor, rdevminor, namesize (with the NUL), check. Upper case, as gen_init_cpio writes it.
_HEADER = b"070701" + b"%08X" * 13
_TRAILER = b"TRAILER!!!"
_FIELD_MAX = 0xFFFFFFFF
_PATH_MAX = 4096  # the kernel's unpacker rejects longer names


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int,
            rdev: tuple[int, int], namesize: int) -> bytes:
    return _HEADER % (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], namesize, 0)


def _read(entry: Entry) -> bytes:
    try:
        return entry.content()
    except OSError as exc:
        raise BuildError(
            f"cannot read {entry.source} for {entry.path} (from {entry.origin}): "
            f"{exc.strerror or exc}"
        ) from exc


def _member(entry: Entry, ino: int, mtime: int) -> list[bytes]:
    name = b"." if entry.path == "/" else entry.path[1:].encode()
    if b"\0" in name or len(name) >= _PATH_MAX:
        raise BuildError(f"cannot archive {entry.path!r}: names must be NUL-free and "
                         f"shorter than {_PATH_MAX} bytes")
    data = _read(entry)
    if len(data) > _FIELD_MAX:
        raise BuildError(f"cannot archive {entry.path}: newc holds files below 4 GiB")
    rdev = entry.rdev if entry.kind in (Kind.CHAR, Kind.BLOCK) else (0, 0)
    mode = entry.kind.value | (entry.mode & 0o7777)
    nlink = 2 if entry.kind is Kind.DIR else 1
    head = _header(ino, mode, nlink, mtime, len(data), rdev, len(name) + 1) + name + b"\0"
    return [head, _pad(len(head)), data, _pad(len(data))]


def render_cpio(tree: Tree, mtime: int) -> bytes:
    """The tree as a newc archive: sorted, owned 0:0, every mtime ``mtime``, inodes numbered."""
    return _archive(tree.entries(), mtime, first_ino=1)


def render_entries(entries: Iterable[Entry], mtime: int) -> bytes:
    """Some entries as a newc archive of their own (to measure what they cost compressed)."""
    return _archive(entries, mtime, first_ino=1)


def _archive(entries: Iterable[Entry], mtime: int, first_ino: int) -> bytes:
    if not 0 <= mtime <= _FIELD_MAX:
        raise BuildError(f"SOURCE_DATE_EPOCH {mtime} does not fit the cpio's 32-bit mtime")
    chunks: list[bytes] = []
    for ino, entry in enumerate(entries, start=first_ino):
        chunks += _member(entry, ino, mtime)
    trailer = _header(0, 0, 1, 0, 0, (0, 0), len(_TRAILER) + 1) + _TRAILER + b"\0"
    chunks += [trailer, _pad(len(trailer))]
    return b"".join(chunks)


# --- layers -----------------------------------------------------------------------------------
# The kernel unpacks an initramfs made of several archives one after another, each compressed
# on its own (init/initramfs.c; each must end with its trailer). The image is cut in three by
# how often each part changes, so a build compresses only the parts that did (the build caches
# each compressed layer by the digest of its archive) and each part gets the filter that suits
# it; measured on the default image, the three cost 0.1% against one archive (docs/formats.md).


class Layer(enum.Enum):
    """A part of the initramfs, in the order the kernel unpacks them."""

    FILES = "files"  # folders, links, devices and what the recipe renders: changes with each edit
    PROGRAMS = "programs"  # the components' files (programs and their libraries)
    MODULES = "modules"  # kernel modules and their index files

    @property
    def branch_filter(self) -> bool:
        """Whether xz's x86 branch filter helps: it does on executables and libraries; on
        kernel modules (relocatable objects, calls not yet linked) it costs 7% instead."""
        return self is Layer.PROGRAMS


COMPONENT_ORIGINS = ("debian:", "url:", "path:")  # builder.components.resolve.source_key, Package.origin
MODULE_FOLDERS = ("/lib/modules/", "/usr/lib/modules/")
_INODE_SPAN = 1 << 24  # inode numbers per layer: unique across layers, stable within one


def layer_of(entry: Entry) -> Layer:
    """The layer an entry goes in: folders and everything not from a component in FILES, so
    every later layer finds its parent folders made."""
    if entry.kind is not Kind.FILE:
        return Layer.FILES
    if entry.path.startswith(MODULE_FOLDERS):
        return Layer.MODULES
    return Layer.PROGRAMS if entry.origin.startswith(COMPONENT_ORIGINS) else Layer.FILES


@dataclass(frozen=True)
class Segment:
    """One layer's uncompressed newc archive."""

    layer: Layer
    archive: bytes
    entries: int


def render_layers(tree: Tree, mtime: int) -> list[Segment]:
    """The tree as one archive per non-empty layer, in unpack order. A layer's bytes depend only
    on its own entries (its inode numbers start at a fixed base), so an unchanged layer is
    byte-identical from build to build."""
    by_layer: dict[Layer, list[Entry]] = {layer: [] for layer in Layer}
    for entry in tree.entries():
        by_layer[layer_of(entry)].append(entry)
    if len(tree) >= _INODE_SPAN:
        raise BuildError(f"the initramfs has {len(tree)} entries; at most {_INODE_SPAN - 1} fit")
    return [Segment(layer, _archive(entries, mtime, first_ino=index * _INODE_SPAN + 1), len(entries))
            for index, (layer, entries) in enumerate(by_layer.items()) if entries]


def _xz(data: bytes, level: int, x86: bool) -> bytes:
    # The kernel's xz decoder verifies CRC32 but not CRC64. For the initramfs it allocates the
    # dictionary as needed (lib/decompress_unxz.c, XZ_DYNALLOC), so a 16 MiB dictionary finds
    # matches across libraries and modules: 8% smaller than 1 MiB on the default image. The x86
    # BCJ filter (CONFIG_XZ_DEC_X86, on in Debian's kernels) takes another 2%; 6.1 kernels have
    # no ARM64 BCJ decoder, so arm64 images use LZMA2 alone.
    bcj = [{"id": lzma.FILTER_X86}] if x86 else []
    filters = [*bcj, {"id": lzma.FILTER_LZMA2, "preset": level, "dict_size": 16 << 20}]
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)


def _gzip(data: bytes, level: int, x86: bool) -> bytes:
    # mtime=0 and no file name keep the header free of build-time facts.
    return gzip.compress(data, compresslevel=level, mtime=0)


def _zstd(data: bytes, level: int, x86: bool) -> bytes:
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                          write_content_size=True)
    return compressor.compress(data)


_COMPRESSORS: dict[Compression, Callable[[bytes, int, bool], bytes]] = {
    Compression.GZIP: _gzip,
    Compression.XZ: _xz,
    Compression.ZSTD: _zstd,
}


def compress(data: bytes, compression: Compression, level: int | None = None, *,
             x86: bool = False) -> bytes:
    """``data`` compressed reproducibly; ``level`` defaults to ``compression.default_level``.

    ``x86`` adds xz's x86 branch filter (for x86_64 images; ignored by gzip and zstd)."""
    if compression is Compression.NONE:
        return data
    level = compression.default_level if level is None else level
    if level is None or level not in compression.levels:
        levels = compression.levels
        raise BuildError(f"{compression.value} level {level} is out of range: expected "
                         f"{levels.start} to {levels.stop - 1}")
    return _COMPRESSORS[compression](data, level, x86)


# compress() with the same arguments; the build passes one that goes through its cache.
Compressor = Callable[[bytes, Compression, int | None, bool], bytes]


@dataclass(frozen=True)
class WrittenLayer:
    """Where a layer sits in the written image (byte offset and size) and what it holds."""

    layer: Layer
    offset: int
    size: int
    sha256: str  # of the compressed bytes at [offset, offset + size)
    archive_sha256: str  # of the uncompressed archive
    entries: int


def _compress_default(data: bytes, compression: Compression, level: int | None, x86: bool) -> bytes:
    return compress(data, compression, level, x86=x86)


def make_initramfs(tree: Tree, path: Path, mtime: int, compression: Compression,
                   level: int | None = None, *, x86: bool = False,
                   compressor: Compressor = _compress_default, jobs: int = 1) -> list[WrittenLayer]:
    """Write the tree's layers, each compressed on its own, to ``path`` atomically (nothing is
    left behind on failure). ``jobs`` layers compress at once (xz, gzip and zstd release the
    GIL). Returns where each layer landed."""
    segments = render_layers(tree, mtime)

    def one(segment: Segment) -> bytes:
        return compressor(segment.archive, compression, level, x86 and segment.layer.branch_filter)

    if jobs > 1 and len(segments) > 1:
        with ThreadPoolExecutor(max_workers=min(jobs, len(segments))) as pool:
            blobs = list(pool.map(one, segments))
    else:
        blobs = [one(segment) for segment in segments]
    written, offset = [], 0
    for segment, blob in zip(segments, blobs, strict=True):
        written.append(WrittenLayer(segment.layer, offset, len(blob), hashlib.sha256(blob).hexdigest(),
                                    hashlib.sha256(segment.archive).hexdigest(), segment.entries))
        offset += len(blob)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.writelines(blobs)
            os.fchmod(out.fileno(), public_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written
