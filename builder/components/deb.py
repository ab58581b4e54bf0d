"""Unpacking .deb files into content-addressed folder trees in the cache, which builds only read."""

from __future__ import annotations

import io
import json
import logging
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import zstandard
from debian.deb822 import Deb822

from builder.components.cache import Cache, sha256_file, touch, write_atomic
from builder.components.unpacked import RISKY_BITS, modes_file
from builder.components.xzblocks import ParallelReader, read_blocks
from builder.errors import BuildError

log = logging.getLogger(__name__)

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60
# A data.tar.xz this big is read whole and its blocks decompressed in parallel (xzblocks).
PARALLEL_XZ = 8 << 20


def unpack_deb(deb: Path, cache: Cache, name: str = "") -> Path:
    """The folder holding the files of ``deb``: ``cache.root/unpacked/<sha256>``, made once.
    No file in it is setuid, setgid, sticky or world-writable: the modes the package gave
    such files are in ``<sha256>.modes.json`` beside it (``unpacked.package_mode``). ``name``
    (the package's) is what progress shows while it unpacks."""
    # A .deb from Cache.fetch is named by its digest; trusting that name keeps a hit free.
    digest = deb_digest(deb, cache)
    # Not trees/: those kept special bits (before issue #23) and have no modes file.
    tree = cache.root / "unpacked" / digest
    if tree.is_dir():
        touch(tree)
        return tree
    if cache.on_unpack is not None:
        cache.on_unpack(name or deb.name)
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{digest}."))
    try:
        listing: dict[str, str] = {}
        with data_tar(deb) as tar:
            dropped = extract_tar(tar, tmp, deb, listing=listing)
        if dropped:  # written first: a tree in place always has its modes file
            write_atomic(modes_file(tree), json.dumps(dropped, sort_keys=True).encode())
        save_contents(cache, digest, listing)  # what list_contents would read again
        os.replace(tmp, tree)
        touch(tree)  # not the package's date: the time it was last used
    except OSError as exc:
        if not tree.is_dir():  # else a concurrent build renamed its copy first
            raise BuildError(f"{deb}: unpacking failed: {exc}") from exc
    finally:
        remove_tree(tmp)
    log.debug("unpacked %s into %s", deb, tree)
    return tree


CONTENTS_FORMAT = 1


def list_contents(deb: Path, cache: Cache, unpack: bool = False, name: str = "") -> dict[str, str]:
    """What ``dpkg --contents`` shows of ``deb``, read from the data.tar member names: each
    path (no leading ``./``) to ``"d"`` (folder), ``"f"`` (file, hard links too) or
    ``"l:TARGET"`` (symlink). Kept in the cache by the package's digest, and written there
    by ``unpack_deb`` too, so a package is decompressed once for both. With ``unpack``, a
    cache blob not listed yet is unpacked (``unpack_deb``, which a build does anyway) and
    listed on the way, instead of read once for the listing and again for the build; ``name``
    is the package's, for progress."""
    digest = deb_digest(deb, cache)
    if (found := cached_contents(cache, digest)) is not None:
        return found
    if unpack and deb == cache.blob_path(digest) \
            and not (cache.root / "unpacked" / digest).is_dir():
        unpack_deb(deb, cache, name)
        if (found := cached_contents(cache, digest)) is not None:
            return found
    entries: dict[str, str] = {}
    with data_tar(deb) as tar:
        for member in tar:
            _list_member(_member_path(member.name, deb), member, entries)
    save_contents(cache, digest, entries)
    return entries


def deb_digest(deb: Path, cache: Cache) -> str:
    """The sha256 of ``deb``: a blob of ``cache`` is named by it, any other file is read."""
    cached = bool(re.fullmatch(r"[0-9a-f]{64}", deb.name)) and deb == cache.blob_path(deb.name)
    return deb.name if cached else sha256_file(deb)


def _contents_file(cache: Cache, digest: str) -> Path:
    return cache.root / "derived" / "contents" / f"{digest}.v{CONTENTS_FORMAT}.json"


def cached_contents(cache: Cache, digest: str) -> dict[str, str] | None:
    """The listing of the package ``digest`` kept in the cache, if any (and readable)."""
    saved = _contents_file(cache, digest)
    try:
        found: dict[str, str] = json.loads(saved.read_bytes())
    except (OSError, ValueError):  # none yet, or a damaged copy: read the package again
        return None
    touch(saved)  # used: `cache prune` removes the least recently used first
    return found


def save_contents(cache: Cache, digest: str, entries: dict[str, str]) -> None:
    """Keep the listing of the package ``digest`` (as ``list_contents`` returns it)."""
    write_atomic(_contents_file(cache, digest), json.dumps(entries, sort_keys=True).encode())


def _list_member(rel: str, member: tarfile.TarInfo, entries: dict[str, str]) -> None:
    if member.isdir():
        entries[rel] = "d"
    elif member.issym():
        entries[rel] = f"l:{member.linkname}"
    elif member.isreg() or member.islnk():
        entries[rel] = "f"


def read_control(deb: Path) -> dict[str, str]:
    """The fields of the package's ``control`` file (Package, Version, Source, Built-Using...)."""
    with _member_tar(deb, "control.tar") as tar:
        for member in tar:
            if member.name.lstrip("./") == "control" and member.isreg():
                source = tar.extractfile(member)
                assert source is not None
                text = source.read(1 << 20).decode(errors="replace")
                return {key: str(value) for key, value in Deb822(text.splitlines()).items()}
    raise BuildError(f"{deb}: not a Debian package (no control file)")


@contextmanager
def data_tar(deb: Path) -> Iterator[tarfile.TarFile]:
    """The data.tar.* member of the ar archive ``deb``, opened as a stream."""
    with _member_tar(deb, "data.tar") as tar:
        yield tar


@contextmanager
def _member_tar(deb: Path, prefix: str) -> Iterator[tarfile.TarFile]:
    """The ``prefix``.* member (control.tar or data.tar) of the ar archive ``deb``, as a stream."""
    with deb.open("rb") as f:
        name, size = find_member(f, deb, prefix)
        member: io.RawIOBase = _Slice(f, size)
        # tarfile cannot read zstd (python/cpython#81276); dpkg writes it since 1.21.18.
        zst = name.endswith(".zst")
        plain = zst
        if name.endswith(".xz") and size > PARALLEL_XZ:
            data = f.read(size)
            blocks = read_blocks(data)
            member = ParallelReader(data, blocks) if blocks and len(blocks) > 1 \
                else _Slice(io.BytesIO(data), size)
            plain = blocks is not None and len(blocks) > 1
        buffered = io.BufferedReader(member, 1 << 20)
        stream = zstandard.ZstdDecompressor().stream_reader(buffered) if zst else buffered
        try:
            with member, tarfile.open(fileobj=stream, mode="r|" if plain else "r|*") as tar:
                yield tar
        except (tarfile.TarError, zstandard.ZstdError, EOFError, lzma.LZMAError,
                zlib.error) as exc:
            raise BuildError(f"{deb}: corrupt {name}: {exc}") from exc


class _Slice(io.RawIOBase):
    """The next ``size`` bytes of ``f``, so a decompressor cannot read past its ar member."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._f.read(min(len(buffer), self._left))
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


def find_member(f: BinaryIO, deb: Path, prefix: str) -> tuple[str, int]:
    """Seek ``f`` to the member named ``prefix``* and return its name and size (man 5 ar)."""
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise BuildError(f"{deb}: not a Debian package (no ar archive header)")
    while len(header := f.read(AR_HEADER)) == AR_HEADER:
        name = header[:16].decode(errors="replace").strip().rstrip("/")
        try:
            size = int(header[48:58])
        except ValueError:
            break
        if name.startswith(prefix):
            return name, size
        f.seek(size + size % 2, os.SEEK_CUR)
    raise BuildError(f"{deb}: not a Debian package (no {prefix} member)")


Keep = Callable[[str, tarfile.TarInfo], bool]


def extract_tar(tar: tarfile.TarFile, root: Path, deb: Path, keep: Keep | None = None,
                wrote: Callable[[str, Path], None] | None = None,
                listing: dict[str, str] | None = None) -> dict[str, int]:
    """Write every member under ``root``: files, dirs, symlinks, hard links; no device nodes;
    with ``keep``, only the members it keeps (it sees each first), and ``wrote`` hears of each
    regular file written; ``listing`` gets every member, kept or not, as ``list_contents``
    lists it. Returns the modes whose special or world-writable bits were not written, by
    path."""
    dropped: dict[str, int] = {}
    symlinks: set[str] = set()
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    made: set[Path] = set()
    for member in tar:
        rel = _member_path(member.name, deb)
        _check_parents(rel, member.name, symlinks, deb)
        if listing is not None:
            _list_member(rel, member, listing)
        if keep is not None and not keep(rel, member):
            continue
        dest = root / rel if rel else root
        if member.isdir():
            if rel in symlinks:  # chmod would follow it out of the tree
                raise BuildError(f"{deb}: refusing to unpack {member.name!r}: a folder over the "
                                 "symlink of the same name")
            dest.mkdir(parents=True, exist_ok=True)
            made.add(dest)
            dirs.append((dest, member))
            _note_risky(rel, member.mode, dropped)
            continue
        if not (member.isreg() or member.issym() or member.islnk()):
            log.debug("%s: skipping special file %s", deb, member.name)
            continue
        if dest.parent not in made:  # a mkdir per file costs more than the write on some disks
            dest.parent.mkdir(parents=True, exist_ok=True)
            made.add(dest.parent)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        if member.issym():
            os.symlink(member.linkname, dest)
            symlinks.add(rel)
        elif member.islnk():
            source = _member_path(member.linkname, deb)
            _check_parents(source, member.linkname, symlinks, deb)
            os.link(root / source, dest, follow_symlinks=False)
            continue
        else:
            _write_file(tar, member, dest)
            _note_risky(rel, member.mode, dropped)
            if wrote is not None:
                wrote(rel, dest)
        os.utime(dest, (member.mtime, member.mtime), follow_symlinks=False)
    # Directory modes last, deepest first, so a read-only directory is filled before it closes.
    for dest, member in reversed(dirs):
        os.chmod(dest, member.mode & 0o7777 & ~RISKY_BITS)
        os.utime(dest, (member.mtime, member.mtime))
    if not any(dest == root for dest, _ in dirs):
        os.chmod(root, 0o755)
    return dropped


def _note_risky(rel: str, mode: int, dropped: dict[str, int]) -> None:
    if mode & RISKY_BITS:
        dropped[rel or "."] = mode & 0o7777


def _member_path(name: str, deb: Path) -> str:
    """``name`` relative to the tree root; absolute names and '..' are refused, never rewritten."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise BuildError(
            f"{deb}: refusing to unpack {name!r}: absolute paths and '..' are not allowed"
        )
    return "/".join(parts)


def _check_parents(rel: str, name: str, symlinks: set[str], deb: Path) -> None:
    """Refuse a member below a symlink of the same package, which could point anywhere."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        if (parent := "/".join(parts[:i])) in symlinks:
            raise BuildError(f"{deb}: refusing to unpack {name!r}: it lies below the symlink "
                             f"{parent!r}")


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None
    # O_NOFOLLOW|O_EXCL: never write through a symlink, even one raced into place.
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    os.chmod(dest, member.mode & 0o7777 & ~RISKY_BITS)


def remove_tree(path: Path) -> None:
    """Delete a half-made or duplicate tree, even where package modes made folders read-only."""
    if not path.exists():
        return
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o700)
    shutil.rmtree(path)
