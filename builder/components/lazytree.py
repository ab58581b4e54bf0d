"""A kernel package unpacked without its modules: ``unpacked/<sha256>.lazy/`` holds the kernel
image, the modules.* files, the documentation and only the modules the recipe asks for (and
those they name in ``depends=`` or ``softdep=`` that come later in the archive); every other
module is listed in the tree's ``.lazy.json`` with its place in the package's data.tar, and
``ensure`` writes one when a build first needs it. A Debian kernel is ~4,000 modules and
400 MB unpacked; an initramfs needs a few dozen.

Reading a listed module later costs only the xz blocks that hold it (builder.components.
xzblocks), or one pass over the data.tar when it is not an indexed .xz. A tree that
``unpack_deb`` unpacked whole (caches from before) is used as it is.
"""

from __future__ import annotations

import functools
import json
import os
import re
import struct
import tarfile
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from builder.components.cache import Cache, touch, write_atomic
from builder.components.deb import (
    data_tar,
    extract_tar,
    find_member,
    remove_tree,
    save_contents,
)
from builder.components.unpacked import modes_file
from builder.components.xzblocks import Block, read_blocks, read_range
from builder.errors import BuildError

FORMAT = 1
LISTING = ".lazy.json"  # in the tree's top folder
MODULE = re.compile(r"^(?:usr/)?lib/modules/[^/]+/.+/(?P<stem>[^/]+)\.ko$")
MODULE_FOLDER = re.compile(r"^(?:usr/)?lib/modules/[^/]+/kernel/")


def unpack_kernel(deb: Path, cache: Cache, wanted: Iterable[str]) -> Path:
    """The tree of kernel package ``deb`` (a blob of ``cache``): the whole one when the cache
    has it, else the lazy one (made once; the modules named in ``wanted`` written at once)."""
    digest = deb.name
    if deb != cache.blob_path(digest):
        raise BuildError(f"{deb}: a kernel package is unpacked from the cache's copy")
    whole = cache.root / "unpacked" / digest
    if whole.is_dir():
        touch(whole)
        return whole
    tree = whole.with_name(f"{digest}.lazy")
    if _listing_file(tree).is_file():
        touch(tree)
        return tree
    if tree.is_dir():  # a cache from before the listing moved inside: set aside, made anew
        _set_aside(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{digest}."))
    try:
        choice = _Choice({_name(w) for w in wanted}, tmp)
        contents: dict[str, str] = {}
        with data_tar(deb) as tar:
            choice.tar = tar
            dropped = extract_tar(tar, tmp, deb, keep=choice.keep, wrote=choice.wrote,
                                  listing=contents)
        late = choice.finish()
        save_contents(cache, digest, contents)  # the same pass lists it (kernel_contents)
        if dropped:
            write_atomic(modes_file(tree), json.dumps(dropped, sort_keys=True).encode())
        listing = {"format": FORMAT, "members": choice.skipped}
        # Inside the tree, written before it is renamed into place: a tree is never seen
        # without its listing, and a build that lost the race to unpack the same package
        # (another process, another set of modules) cannot replace the winner's listing.
        write_atomic(_listing_file(tmp), json.dumps(listing, sort_keys=True).encode())
        os.replace(tmp, tree)
        touch(tree)
    except OSError as exc:
        if not tree.is_dir():
            raise BuildError(f"{deb}: unpacking failed: {exc}") from exc
    finally:
        remove_tree(tmp)
    for rel in late:  # needed, but gone by: from the blocks that hold them, in archive order
        ensure(tree / rel)
    return tree


def is_made(deb: Path, cache: Cache) -> bool:
    """Whether the kernel tree of ``deb`` is in ``cache``: the whole one an older cache
    has, or the lazy one with its listing."""
    whole = cache.root / "unpacked" / deb.name
    return whole.is_dir() or _listing_file(whole.with_name(f"{deb.name}.lazy")).is_file()


def _set_aside(tree: Path) -> None:
    stale = Path(tempfile.mkdtemp(dir=tree.parent, prefix=f".{tree.name}.stale."))
    try:
        os.replace(tree, stale / "tree")
        tree.with_name(f"{tree.name}.json").unlink(missing_ok=True)  # its old listing
    except OSError:
        pass  # another build set it aside first
    remove_tree(stale)


def lazy_files(folder: Path) -> list[str]:
    """The files under ``folder`` (inside a lazy tree) not written yet, relative to it."""
    lazy = _lazy_of(folder)
    if lazy is None:
        return []
    prefix = folder.relative_to(lazy.root).as_posix() + "/"
    return sorted(rel[len(prefix):] for rel in lazy.members if rel.startswith(prefix))


def ensure(path: Path) -> None:
    """Write ``path`` from its package if it is a lazy tree's file not written yet."""
    if path.exists():
        return
    lazy = _lazy_of(path.parent)
    if lazy is not None:
        lazy.write(path.relative_to(lazy.root).as_posix())


def _name(module: str) -> str:
    return module.replace("-", "_")


def _listing_file(tree: Path) -> Path:
    return tree / LISTING


class _Choice:
    """Which modules the first pass writes: the wanted ones and, transitively, those their
    ``depends=`` and ``softdep=`` name (a softdep by its crypto spellings too). A module that
    only a later one turns out to need is served from memory when it was kept there, else
    listed in ``late`` for the xz blocks that hold it: reading one back costs a 24 MiB block's
    decompression at the end of the pass.

    Kept in memory: the last ``RING`` bytes of modules passed by (``usbcore`` for
    ``usb-storage``, a few MB later), and every module of at most ``SMALL`` bytes, some
    35 MB in all: what a later module needs from far back in the archive is such a library
    module (``sd_mod`` needs ``t10-pi`` from block/ and the CRCs from crypto/, 100 MB
    before it).

    The folders below the modules' ``kernel/`` are not made by the pass (some 900 of them,
    for a few dozen modules): writing a module makes its own."""

    RING = 64 << 20
    SMALL = 32 << 10

    def __init__(self, wanted: set[str], root: Path) -> None:
        self.needed = set(wanted)
        self.root = root
        self.tar: tarfile.TarFile | None = None
        self.skipped: dict[str, list[int]] = {}
        self.deps: dict[str, set[str]] = {}
        self.by_name: dict[str, str] = {}
        self.ring: dict[str, bytes] = {}  # rel -> bytes, oldest first
        self.ring_size = 0
        self.small: dict[str, bytes] = {}  # rel -> bytes

    def keep(self, rel: str, member: tarfile.TarInfo) -> bool:
        if member.isdir():
            return MODULE_FOLDER.match(rel) is None
        match = MODULE.match(rel)
        if match is None or not (member.isreg() or member.islnk()):
            return True
        if member.islnk():  # a hard link to a module left out is left out too
            source = member.linkname.lstrip("./")
            if source in self.skipped:
                self.skipped[rel] = self.skipped[source]
                return False
            return True
        name = _name(match["stem"])
        if name in self.needed:
            return True
        assert self.tar is not None
        stream = self.tar.extractfile(member)
        assert stream is not None
        data = stream.read()
        self.skipped[rel] = [member.offset_data, member.size, member.mode & 0o755,
                             int(member.mtime)]
        self.deps[name] = _depends(data)
        self.by_name.setdefault(name, rel)
        if len(data) <= self.SMALL:
            self.small[rel] = data
            return False
        self.ring[rel] = data
        self.ring_size += len(data)
        while self.ring_size > self.RING:
            self.ring_size -= len(self.ring.pop(next(iter(self.ring))))
        return False

    def wrote(self, rel: str, dest: Path) -> None:
        if MODULE.match(rel) is not None:
            self._need(_depends(dest.read_bytes()))

    def _need(self, names: set[str]) -> None:
        pending = sorted(names - self.needed)
        self.needed.update(pending)
        while pending:
            name = pending.pop()
            rel = self.by_name.get(name)
            if rel is not None and rel in self.ring:  # passed by, still in memory: write it
                data = self.ring.pop(rel)
                self.ring_size -= len(data)
                self._write(rel, data)
            elif rel is not None and rel in self.small:
                self._write(rel, self.small.pop(rel))
            new = sorted(self.deps.get(name, set()) - self.needed)
            self.needed.update(new)
            pending += new

    def _write(self, rel: str, data: bytes) -> None:
        _, _, mode, mtime = self.skipped.pop(rel)
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, data)
        os.chmod(dest, mode)
        os.utime(dest, (mtime, mtime))

    def finish(self) -> list[str]:
        """The needed modules left out and gone from memory, in archive order."""
        late = [self.by_name[n] for n in self.needed if self.by_name.get(n) in self.skipped]
        return sorted(late, key=lambda rel: self.skipped[rel][0])


def _depends(data: bytes) -> set[str]:
    """The module names a module's .modinfo names in ``depends=`` or ``softdep=``."""
    names: set[str] = set()
    for item in _modinfo(data).split(b"\0"):
        key, _, value = item.partition(b"=")
        if key not in (b"depends", b"softdep"):
            continue
        for token in value.decode(errors="replace").replace(",", " ").split():
            if not token.endswith(":"):
                name = _name(token)
                bare = name.removeprefix("crypto_")
                names.update({name, bare, f"{bare}_generic"})
    return names


def _modinfo(data: bytes) -> bytes:
    """The .modinfo section of an ELF module, found by its section headers (searching the
    whole file is slow: modules are mostly NUL bytes); the whole file when it is no ELF."""
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return data
    end = "<" if data[5] == 1 else ">"
    wide = data[4] == 2
    try:
        shoff = struct.unpack_from(end + ("Q" if wide else "I"), data, 0x28 if wide else 0x20)[0]
        size, count, names = struct.unpack_from(end + "HHH", data, 0x3A if wide else 0x2E)
        field = end + ("IIQQQQ" if wide else "IIIIII")

        def section(index: int) -> tuple[int, int, int]:
            name, _, _, _, offset, length = struct.unpack_from(field, data, shoff + index * size)
            return name, offset, length

        _, table, table_size = section(names)
        wanted = data.find(b"\0.modinfo\0", table, table + table_size) + 1 - table
        for index in range(count):
            name, offset, length = section(index)
            if wanted > 0 and name == wanted:
                return data[offset:offset + length]
    except struct.error:
        pass
    return data


class _Lazy:
    """One lazy tree's listing, and the package's data.tar read for the files it lists."""

    def __init__(self, root: Path, listing: dict[str, object]) -> None:
        self.root = root
        members = listing.get("members")
        self.members: dict[str, list[int]] = dict(members) if isinstance(members, dict) else {}
        digest = root.name.removesuffix(".lazy")  # the package is the cache's blob of that digest
        self.deb = root.parent.parent / "blobs" / digest[:2] / digest
        self._lock = threading.Lock()
        self._memo: dict[int, bytes] = {}
        self._packed: tuple[bytes, list[Block] | None] | None = None

    def write(self, rel: str) -> None:
        if rel not in self.members:
            return
        offset, size, mode, mtime = self.members[rel]
        with self._lock:
            data = self._read(offset, size)
        dest = self.root / rel
        write_atomic(dest, data)
        os.chmod(dest, mode)
        os.utime(dest, (mtime, mtime))

    def _read(self, offset: int, size: int) -> bytes:
        try:
            if self._packed is None:
                with self.deb.open("rb") as f:
                    name, length = find_member(f, self.deb, "data.tar")
                    data = f.read(length) if name.endswith(".xz") else b""
                self._packed = (data, read_blocks(data) if data else None)
            packed, blocks = self._packed
            if blocks is not None:
                return read_range(packed, blocks, offset, size, self._memo)
            with data_tar(self.deb) as tar:  # not an indexed .xz: one pass from the start
                for member in tar:
                    if member.offset_data == offset and member.size == size:
                        source = tar.extractfile(member)
                        assert source is not None
                        return source.read()
        except (OSError, ValueError) as exc:
            raise BuildError(f"{self.deb}: cannot read a module at {offset}: {exc}",
                             hint="the package left the cache: run the build again") from exc
        raise BuildError(f"{self.deb}: no member at {offset} of {size} bytes")


@functools.cache
def _load(root: Path) -> _Lazy | None:
    try:
        listing = json.loads(_listing_file(root).read_text())
    except (OSError, ValueError):
        return None
    return _Lazy(root, listing) if listing.get("format") == FORMAT else None


def _lazy_of(folder: Path) -> _Lazy | None:
    """The lazy tree ``folder`` is in (a folder named ``<sha256>.lazy`` above it), if any."""
    for parent in (folder, *folder.parents):
        if parent.name.endswith(".lazy") and parent.parent.name == "unpacked":
            return _load(parent)
    return None
