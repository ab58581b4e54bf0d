"""Shared-library closure of ELF programs, read from their headers so it works for any arch."""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from builder.components.unpacked import package_mode
from builder.errors import BuildError
from builder.initramfs import facts
from builder.initramfs.tree import Kind, Tree

log = logging.getLogger(__name__)

ELF_MAGIC = b"\x7fELF"
MAX_LINK_HOPS = 40  # the kernel's limit on symlinks followed in one lookup
MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

# Debian multiarch triplets by (e_machine, ELF class): the library folders glibc searches by
# default. Where one machine has several Debian ports (armel/armhf, ppc64/ppc64el), all are listed.
TRIPLETS: dict[tuple[str, int], tuple[str, ...]] = {
    ("EM_X86_64", 64): ("x86_64-linux-gnu",),
    ("EM_386", 32): ("i386-linux-gnu",),
    ("EM_AARCH64", 64): ("aarch64-linux-gnu",),
    ("EM_ARM", 32): ("arm-linux-gnueabihf", "arm-linux-gnueabi"),
    ("EM_PPC64", 64): ("powerpc64le-linux-gnu", "powerpc64-linux-gnu"),
    ("EM_RISCV", 64): ("riscv64-linux-gnu",),
    ("EM_S390", 64): ("s390x-linux-gnu",),
    ("EM_MIPS", 64): ("mips64el-linux-gnuabi64",),
    ("EM_MIPS", 32): ("mipsel-linux-gnu",),
    ("EM_LOONGARCH", 64): ("loongarch64-linux-gnu",),
}


@dataclass(frozen=True)
class ElfInfo:
    """What the dynamic loader reads from an ELF file's headers."""

    machine: str
    elfclass: int
    interpreter: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    soname: str | None

    def compatible(self, other: ElfInfo) -> bool:
        """Whether ``other`` could be loaded into the same process as this file."""
        return (self.machine, self.elfclass) == (other.machine, other.elfclass)

    def describe(self) -> str:
        """``EM_AARCH64/64``, for messages."""
        return f"{self.machine}/{self.elfclass}"


def parse_elf(path: Path) -> ElfInfo | None:
    """Read machine, interpreter and dynamic section of ``path``; None when it is not ELF.
    Remembered between builds (builder.initramfs.facts)."""
    return facts.current().recall("elf", path, lambda: _parse_elf(path), _encode, _decode)


def _encode(info: ElfInfo | None) -> dict[str, Any] | None:
    return dataclasses.asdict(info) if info is not None else None


def _decode(value: dict[str, Any] | None) -> ElfInfo | None:
    if value is None:
        return None
    return ElfInfo(**{**value, "needed": tuple(value["needed"]), "runpath": tuple(value["runpath"])})


def _parse_elf(path: Path) -> ElfInfo | None:
    with path.open("rb") as f:
        if f.read(4) != ELF_MAGIC:
            return None
        f.seek(0)
        try:
            return _read_elf(ELFFile(f))
        except (ELFError, ValueError, KeyError) as exc:
            raise BuildError(f"{path}: not a valid ELF file: {exc}") from exc


def _read_elf(elf: ELFFile) -> ElfInfo:
    interpreter = None
    tags: dict[str, list[str]] = {"DT_NEEDED": [], "DT_RPATH": [], "DT_RUNPATH": [],
                                  "DT_SONAME": []}
    # Segments, not sections: they survive `strip --strip-all` and are what the loader reads.
    for segment in elf.iter_segments():
        if isinstance(segment, InterpSegment):
            interpreter = segment.get_interp_name()
        elif isinstance(segment, DynamicSegment):
            for tag in segment.iter_tags():
                name = tag.entry.d_tag
                if name in tags:
                    tags[name].append(getattr(tag, name[3:].lower()))
    search = tags["DT_RUNPATH"] or tags["DT_RPATH"]
    return ElfInfo(
        machine=str(elf["e_machine"]),
        elfclass=elf.elfclass,
        interpreter=interpreter,
        needed=tuple(tags["DT_NEEDED"]),
        runpath=tuple(p for entry in search for p in entry.split(":")),
        soname=tags["DT_SONAME"][0] if tags["DT_SONAME"] else None,
    )


def usrmerge_twin(path: str) -> str | None:
    """``/sbin/x`` for ``/usr/sbin/x`` and back: the same file on a merged-/usr system."""
    top = path.split("/")[1:3]
    if top and top[0] == "usr" and len(top) > 1 and top[1] in MERGED_DIRS:
        return path[4:]
    return "/usr" + path if top and top[0] in MERGED_DIRS else None


def default_dirs(info: ElfInfo) -> list[str]:
    """The folders glibc searches when RPATH/RUNPATH do not find a library (Debian layout)."""
    triplets = TRIPLETS.get((info.machine, info.elfclass), ())
    dirs = [d for t in triplets for d in (f"/lib/{t}", f"/usr/lib/{t}")] + ["/lib", "/usr/lib"]
    if info.machine == "EM_X86_64":
        dirs.append("/lib64")
    return dirs


def expand_runpath(entry: str, origin: str, info: ElfInfo) -> list[str]:
    """Expand $ORIGIN, $LIB and $PLATFORM in one RPATH/RUNPATH entry (ld.so(8), "Dynamic
    string tokens")."""
    triplets = TRIPLETS.get((info.machine, info.elfclass), ())
    platform = triplets[0].split("-")[0] if triplets else info.machine
    libs = [f"lib/{t}" for t in triplets] + ["lib"]
    expanded = [entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
                .replace("${PLATFORM}", platform).replace("$PLATFORM", platform)]
    if "$LIB" in entry or "${LIB}" in entry:
        expanded = [e.replace("${LIB}", lib).replace("$LIB", lib) for e in expanded for lib in libs]
    # Empty and relative entries name the process's working folder, which the image cannot know.
    return [posixpath.normpath(e) for e in expanded if e.startswith("/")]


@dataclass(frozen=True)
class Link:
    """A symlink met while resolving a path inside the roots."""

    path: str
    target: str
    root: Path
    is_dir: bool


@dataclass(frozen=True)
class Found:
    """A regular file in one of the roots: its real in-tree path and the links that led to it."""

    path: str
    host: Path
    root: Path
    links: tuple[Link, ...]


class Sysroot:
    """Unpacked package folders seen as one file system: the first root holding a path wins."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [Path(r) for r in roots]
        self._real_dirs: dict[tuple[Path, str], bool] = {}

    def _entry(self, path: str) -> tuple[Path, Path] | None:
        parent = posixpath.dirname(path)
        for root in self.roots:
            host = root / path.lstrip("/")
            if os.path.lexists(host) and self._is_real_dir(root, parent):
                return root, host
        return None

    def _is_real_dir(self, root: Path, folder: str) -> bool:
        """Whether ``folder`` is a folder in ``root`` reached without a symlink, so a link in one
        root (resolved by the overlay) cannot lead the host's file system elsewhere."""
        key = (root, folder)
        if key not in self._real_dirs:
            host = os.path.join(root, folder.lstrip("/"))
            real = os.path.realpath(root)
            self._real_dirs[key] = (os.path.isdir(host) and
                                    os.path.realpath(host) == os.path.join(real, folder.lstrip("/"))
                                    .rstrip("/"))
        return self._real_dirs[key]

    def lookup(self, path: str) -> Found | None:
        """Resolve ``path`` like the kernel would inside the roots; None when it is no file."""
        parts = [p for p in path.split("/") if p]
        current, links = "/", list[Link]()
        while parts:
            part = parts.pop(0)
            if part in (".", ".."):
                current = posixpath.dirname(current) if part == ".." else current
                continue
            candidate = posixpath.join(current, part)
            entry = self._entry(candidate)
            if entry is None:
                return None
            root, host = entry
            if host.is_symlink():
                if len(links) >= MAX_LINK_HOPS:
                    return None
                target = os.readlink(host)
                links.append(Link(candidate, target, root, is_dir=bool(parts)))
                # An absolute target is relative to the root, never to the build machine.
                parts = [p for p in target.split("/") if p] + parts
                current = "/" if target.startswith("/") else current
            elif parts and not host.is_dir():
                return None
            else:
                current = candidate
        entry = self._entry(current)
        if entry is None or not entry[1].is_file() or entry[1].is_symlink():
            return None
        return Found(current, entry[1], entry[0], tuple(links))


@dataclass
class Closure:
    """The files found so far for a set of programs, keyed by in-tree path."""

    sysroot: Sysroot
    files: dict[str, Found] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    infos: dict[str, ElfInfo | None] = field(default_factory=dict)
    memo: dict[tuple[str, tuple[str, ...], str, int], str] = field(default_factory=dict)
    walked: set[str] = field(default_factory=set)

    def keep(self, found: Found) -> ElfInfo | None:
        """Record a file and the links that led to it; return its ELF info."""
        for link in found.links:
            self.links.setdefault(link.path, link)
        if found.path not in self.infos:
            self.files[found.path] = found
            self.infos[found.path] = parse_elf(found.host)
        return self.infos[found.path]

    def add_binary(self, binary: str) -> None:
        """Add a program, its interpreter and its libraries, recursively."""
        found = self.find_program(binary, binary)
        info = self.keep(found)
        if info is None or found.path in self.walked:
            return  # a script has no libraries of its own
        if info.interpreter is not None:
            self.keep(self.find_program(binary, info.interpreter))
        self.add_libraries(binary, found.path, info)

    def find_program(self, binary: str, path: str) -> Found:
        """Find a program or interpreter at ``path``, or at its /usr-merge twin with a link."""
        found = self.sysroot.lookup(path)
        twin = usrmerge_twin(path)
        if found is None and twin is not None and (found := self.sysroot.lookup(twin)):
            # Debian moves files between /sbin and /usr/sbin (and /lib, /usr/lib) across
            # releases; the tree gets the file where the package has it, and a link here.
            self.links.setdefault(path, Link(path, found.path, found.root, is_dir=False))
        if found is not None:
            return found
        if path == binary:
            raise BuildError(f"{binary}: not found in the unpacked packages",
                             hint="add the package that ships it to the recipe")
        raise BuildError(f"{binary}: cannot find its interpreter {path}",
                         hint="add the C library package (e.g. libc6) to the recipe")

    def add_libraries(self, binary: str, path: str, info: ElfInfo) -> None:
        """Walk DT_NEEDED depth-first from the object at in-tree ``path``."""
        pending = [(path, info)]
        self.walked.add(path)
        while pending:
            needer, needer_info = pending.pop()
            for name in needer_info.needed:
                lib = self.find_library(binary, needer, needer_info, name)
                lib_info = self.infos[lib]
                if lib not in self.walked and lib_info is not None:
                    self.walked.add(lib)
                    pending.append((lib, lib_info))

    def search_dirs(self, needer: str, info: ElfInfo) -> tuple[str, ...]:
        """RUNPATH (or RPATH) of the needing object, then the default folders; no duplicates."""
        origin = posixpath.dirname(needer)
        dirs = [d for entry in info.runpath for d in expand_runpath(entry, origin, info)]
        return tuple(dict.fromkeys(dirs + default_dirs(info)))

    def find_library(self, binary: str, needer: str, info: ElfInfo, name: str) -> str:
        """Return the in-tree path of the real file that satisfies ``name`` for ``needer``."""
        dirs = ("",) if "/" in name else self.search_dirs(needer, info)
        key = (name, dirs, info.machine, info.elfclass)
        if key not in self.memo:
            self.memo[key] = self.search(binary, needer, info, name, dirs)
        return self.memo[key]

    def search(self, binary: str, needer: str, info: ElfInfo, name: str,
               dirs: tuple[str, ...]) -> str:
        skipped = []
        for folder in dirs:
            found = self.sysroot.lookup(posixpath.join(folder, name))
            if found is None:
                continue
            candidate = parse_elf(found.host)
            if candidate is None or not info.compatible(candidate):
                what = candidate.describe() if candidate else "not ELF"
                skipped.append(f"{posixpath.join(folder, name)} ({what})")
                continue
            self.keep(found)
            return found.path
        searched = ", ".join(d for d in dirs if d) or name
        raise BuildError(
            f"{binary}: cannot find {name} (needed by {needer}) in {searched}",
            hint=(f"skipped {', '.join(skipped)}: wanted {info.describe()}" if skipped
                  else "add the package that ships it to the recipe"),
        )


def install_elf_closure(tree: Tree, roots: list[Path], binaries: list[str],
                        origin_of: Callable[[Path], str],
                        dests: Mapping[str, str] | None = None) -> list[str]:
    """Install ``binaries`` from the unpacked packages in ``roots`` with their interpreter and
    every library they need; return the sorted in-tree paths installed. ``dests`` puts a
    binary (a regular file, not a link) at another path, e.g. a second BusyBox beside one."""
    closure = Closure(Sysroot(roots))
    for binary in binaries:
        closure.add_binary(binary)
    renamed = {_regular_file(closure, binary): dest for binary, dest in (dests or {}).items()}
    for path in sorted(closure.files):
        found = closure.files[path]
        dest = renamed.get(path, path)
        tree.add_file(dest, source=found.host,
                      mode=tree.host_mode(dest, package_mode(found.root, found.host)),
                      origin=origin_of(found.root))
    installed = {renamed.get(path, path) for path in closure.files}
    for path in sorted(closure.links):
        link, existing = closure.links[path], tree.get(path)
        if link.is_dir and existing is not None and existing.kind is Kind.DIR:
            continue  # the tree already has a real folder there; the files sit inside it
        tree.add_symlink(path, link.target, origin=origin_of(link.root))
        installed.add(path)
    log.debug("ELF closure of %s: %d files", ", ".join(binaries), len(installed))
    return sorted(installed)


def _regular_file(closure: Closure, binary: str) -> str:
    found = closure.sysroot.lookup(binary)
    if found is None or found.links:
        raise BuildError(f"{binary}: 'dest' needs a regular file, and {binary} is a link",
                         hint="name the file the link points at")
    return found.path
