"""The initramfs file tree: every entry with its kind, mode, content and where it came from."""

from __future__ import annotations

import enum
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.components.unpacked import RISKY_BITS
from builder.errors import BuildError


class Kind(enum.Enum):
    """What an entry is; the value is the file-type bits of ``st_mode``."""

    FILE = 0o100000
    DIR = 0o040000
    SYMLINK = 0o120000
    CHAR = 0o020000
    BLOCK = 0o060000
    FIFO = 0o010000


@dataclass(frozen=True)
class Entry:
    """One path in the tree. Content is ``data`` or the file at ``source``; never both."""

    path: str
    kind: Kind
    mode: int
    origin: str
    data: bytes | None = None
    source: Path | None = None
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    secret: bool = False  # the manifest lists path and mode only (e.g. CHAP secrets)

    def content(self) -> bytes:
        """The bytes stored for this entry: file content or symlink target."""
        if self.kind is Kind.SYMLINK:
            return self.target.encode()
        if self.kind is not Kind.FILE:
            return b""
        if self.data is not None:
            return self.data
        assert self.source is not None
        return self.source.read_bytes()

    def sha256(self) -> str:
        """Digest of ``content()``, for the manifest."""
        return hashlib.sha256(self.content()).hexdigest()


def normalize(path: str) -> str:
    """Return an absolute, normalized path inside the tree, refusing escapes like ``/../x``."""
    if not path.startswith("/"):
        path = "/" + path
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = norm[1:]
    if ".." in norm.split("/"):
        raise BuildError(f"path {path!r} escapes the initramfs root")
    return norm


class Tree:
    """A mutable set of entries keyed by path; later additions replace earlier ones (overlays win).

    A mode taken from a package or a host folder goes through ``host_mode``: setuid, setgid,
    sticky and world-writable bits are dropped unless the path is in ``keep_modes`` (the
    recipe's ``initramfs.keep_modes``); ``dropped`` and ``kept`` say where, for the build log."""

    def __init__(self, keep_modes: Iterable[str] = ()) -> None:
        self._entries: dict[str, Entry] = {"/": Entry("/", Kind.DIR, 0o755, "builtin")}
        # The recipe component that first put each path here, by its name (assemble.make_tree).
        self.owners: dict[str, str] = {}
        self.keep_modes = frozenset(normalize(p) for p in keep_modes)
        self.dropped: dict[str, int] = {}
        self.kept: dict[str, int] = {}

    def host_mode(self, path: str, mode: int) -> int:
        """``mode`` (from a package or host folder) as ``path`` gets it in the image."""
        path, mode = normalize(path), mode & 0o7777
        if not mode & RISKY_BITS:
            return mode
        if path in self.keep_modes:
            self.kept[path] = mode
            return mode
        self.dropped[path] = mode
        return mode & ~RISKY_BITS

    def paths(self) -> set[str]:
        """Every path in the tree."""
        return set(self._entries)

    def __contains__(self, path: str) -> bool:
        return normalize(path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: str) -> Entry | None:
        """The entry at ``path``, or None."""
        return self._entries.get(normalize(path))

    def entries(self) -> Iterator[Entry]:
        """Every entry, sorted by path so archives are reproducible (parents before children)."""
        for path in sorted(self._entries):
            yield self._entries[path]

    def _put(self, entry: Entry) -> None:
        self.add_dir(posixpath.dirname(entry.path), origin=entry.origin, replace=False)
        self._entries[entry.path] = entry

    def add_dir(self, path: str, mode: int = 0o755, origin: str = "builtin",
                replace: bool = True) -> None:
        """Add a directory and any missing parents."""
        path = normalize(path)
        existing = self._entries.get(path)
        if existing is not None and (existing.kind is Kind.DIR and not replace):
            return
        if existing is not None and existing.kind is Kind.SYMLINK and not replace:
            return  # e.g. /lib -> usr/lib: children land under the link's name
        if path != "/":
            self.add_dir(posixpath.dirname(path), origin=origin, replace=False)
        self._entries[path] = Entry(path, Kind.DIR, mode, origin)

    def add_file(self, path: str, *, origin: str, data: bytes | None = None,
                 source: Path | None = None, mode: int = 0o644, secret: bool = False) -> None:
        """Add a regular file from bytes or from a host file; a ``secret`` one's digest and
        size stay out of the manifest."""
        if (data is None) == (source is None):
            raise ValueError("add_file needs exactly one of data and source")
        self._put(Entry(normalize(path), Kind.FILE, mode & 0o7777, origin, data=data,
                        source=source, secret=secret))

    def add_symlink(self, path: str, target: str, *, origin: str) -> None:
        """Add a symbolic link pointing at ``target`` (stored as written)."""
        self._put(Entry(normalize(path), Kind.SYMLINK, 0o777, origin, target=target))

    def add_device(self, path: str, kind: Kind, major: int, minor: int, *, origin: str,
                   mode: int = 0o600) -> None:
        """Add a character or block device node; no root needed, it only exists in the archive."""
        if kind not in (Kind.CHAR, Kind.BLOCK):
            raise ValueError("device kind must be CHAR or BLOCK")
        self._put(Entry(normalize(path), kind, mode, origin, rdev=(major, minor)))

    def add_host_tree(self, root: Path, dest: str, *, origin: str,
                      mode_of: Callable[[Path], int] | None = None) -> None:
        """Copy a host folder (an overlay, a package's folder) into the tree: symlinks as links,
        never followed out of ``root``; modes by ``mode_of`` (default: the file's) through
        ``host_mode``. Device nodes, FIFOs and sockets are left out."""
        for folder, dirs, names in os.walk(root):  # os.walk does not follow folder links
            dirs.sort()
            for name in sorted([*dirs, *names]):
                src = Path(folder, name)
                path = posixpath.join(dest, src.relative_to(root).as_posix())
                info = src.lstat()
                mode = mode_of(src) if mode_of is not None else info.st_mode
                if stat.S_ISLNK(info.st_mode):
                    self.add_symlink(path, os.readlink(src), origin=origin)
                elif stat.S_ISDIR(info.st_mode):
                    self.add_dir(path, self.host_mode(path, mode), origin=origin)
                elif stat.S_ISREG(info.st_mode):
                    self.add_file(path, source=src, mode=self.host_mode(path, mode),
                                  origin=origin)
