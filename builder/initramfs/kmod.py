"""Kernel module closure from each module's .modinfo, and the modules.dep BusyBox modprobe reads."""

from __future__ import annotations

import difflib
import gzip
import heapq
import io
import logging
import lzma
import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from builder.components.lazytree import ensure, lazy_files
from builder.errors import BuildError
from builder.initramfs import facts
from builder.initramfs.tree import Tree

log = logging.getLogger(__name__)


def _unzstd(data: bytes) -> bytes:
    # A stream reader, because the kernel's `zstd` run does not always record the content size.
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return reader.read()


# How each module file suffix is decompressed (kbuild's CONFIG_MODULE_COMPRESS_* choices).
DECOMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".ko": bytes,
    ".ko.xz": lzma.decompress,
    ".ko.zst": _unzstd,
    ".ko.gz": gzip.decompress,
}


def normalize_name(name: str) -> str:
    """Module names treat '-' and '_' alike; the kernel and modprobe use '_'."""
    return name.replace("-", "_")


def split_suffix(filename: str) -> tuple[str, str] | None:
    """``("e1000", ".ko.xz")`` for ``e1000.ko.xz``; None for a file that is not a module."""
    for suffix in DECOMPRESSORS:
        if filename.endswith(suffix):
            return filename[: -len(suffix)], suffix
    return None


@dataclass(frozen=True)
class Module:
    """One loadable module and what its .modinfo says about the modules it needs."""

    name: str
    path: Path
    relpath: str
    depends: tuple[str, ...]
    softdeps_pre: tuple[str, ...]
    aliases: tuple[str, ...]

    def open(self) -> BinaryIO:
        """The module's ELF bytes as a stream; an uncompressed file is read only where needed."""
        if self.path.name.endswith(".ko"):
            return self.path.open("rb")
        return io.BytesIO(self.read())

    def read(self) -> bytes:
        """The module's ELF bytes, decompressed."""
        parts = split_suffix(self.path.name)
        suffix = parts[1] if parts else ".ko"
        try:
            return DECOMPRESSORS[suffix](self.path.read_bytes())
        except (lzma.LZMAError, zstandard.ZstdError, zlib.error, OSError, EOFError) as exc:
            raise BuildError(f"{self.path}: cannot decompress kernel module: {exc}") from exc


def parse_modinfo(stream: BinaryIO, origin: Path) -> dict[str, list[str]]:
    """The ``key=value`` strings of a module's .modinfo section, grouped by key."""
    try:
        elf = ELFFile(stream)
        # Stop at .modinfo: parsing all ~70 section headers costs more than everything else.
        section = next((s for s in elf.iter_sections() if s.name == ".modinfo"), None)
        data = section.data() if section is not None else None
    except (ELFError, ValueError) as exc:
        raise BuildError(f"{origin}: not a kernel module (bad ELF: {exc})") from exc
    if data is None:
        raise BuildError(f"{origin}: not a kernel module (no .modinfo section)")
    info: dict[str, list[str]] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def parse_softdeps(values: list[str]) -> tuple[str, ...]:
    """The ``pre:`` names of ``softdep=pre: a b post: c`` entries."""
    pre, mode = [], ""
    for token in " ".join(values).split():
        if token.endswith(":"):
            mode = token[:-1]
        elif mode == "pre":
            pre.append(normalize_name(token))
    return tuple(pre)


def _same(value: dict[str, list[str]]) -> dict[str, list[str]]:
    return value


def _modinfo(value: Any) -> dict[str, list[str]]:
    return {str(key): [str(v) for v in values] for key, values in value.items()}


def load_module(path: Path, relpath: str) -> Module:
    """Read one module file (compressed or not) into a Module."""
    stub = Module(normalize_name(relpath.rsplit("/", 1)[-1][:-3]), path, relpath, (), (), ())

    def read() -> dict[str, list[str]]:
        with stub.open() as stream:
            return parse_modinfo(stream, path)

    # Remembered between builds (builder.initramfs.facts): pyelftools takes ~5 ms a module.
    info = facts.current().recall("modinfo", path, read, _same, _modinfo)
    depends = ",".join(info.get("depends", []))
    return Module(
        name=normalize_name(info["name"][0]) if "name" in info else stub.name,
        path=path,
        relpath=relpath,
        depends=tuple(normalize_name(d) for d in depends.split(",") if d),
        softdeps_pre=parse_softdeps(info.get("softdep", [])),
        aliases=tuple(info.get("alias", [])),
    )


class ModuleIndex(Mapping[str, Module]):
    """Module name -> Module for one kernel; .modinfo is read only when a module is looked up,
    because a distribution kernel has thousands of modules and a closure needs a dozen."""

    def __init__(self, modules_dir: Path, files: dict[str, str]) -> None:
        self.modules_dir = modules_dir
        self._files = files  # name -> file path relative to modules_dir, with its suffix
        self._loaded: dict[str, Module] = {}

    def __getitem__(self, name: str) -> Module:
        if name not in self._loaded:
            rel = self._files[name]
            ensure(self.modules_dir / rel)
            stem = (split_suffix(rel) or (rel, ""))[0]
            self._loaded[name] = load_module(self.modules_dir / rel, stem + ".ko")
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._files))

    def __len__(self) -> int:
        return len(self._files)


def index_modules(modules_dir: Path) -> ModuleIndex:
    """Map every module file under ``modules_dir`` (``<root>/lib/modules/<ver>``) by name; in a
    lazy kernel tree (builder.components.lazytree), those not written yet too."""
    if not modules_dir.is_dir():
        raise BuildError(f"{modules_dir}: no such kernel modules folder")
    found: list[str] = []
    top = os.fspath(modules_dir)
    # Plain strings, not Paths: building 4000 Path objects costs more than the walk itself.
    for folder, dirs, names in os.walk(top):
        dirs.sort()
        prefix = os.path.relpath(folder, top).replace(os.sep, "/") + "/"
        # A link could lead out of the package to the build machine's files: modules are
        # regular files in every Debian kernel package.
        found += [prefix.removeprefix("./") + n for n in sorted(names)
                  if not os.path.islink(f"{folder}/{n}")]
    files: dict[str, str] = {}
    for rel in found + lazy_files(modules_dir):
        if (parts := split_suffix(rel.rsplit("/", 1)[-1])) is None:
            continue
        name = normalize_name(parts[0])
        # Like depmod, a module under updates/ overrides the one the kernel shipped.
        if name not in files or rel.startswith("updates/"):
            files[name] = rel
    return ModuleIndex(modules_dir, files)


def find_softdep(index: Mapping[str, Module], name: str) -> str | None:
    """The module a softdep names. Softdeps often name a crypto alias (``crypto-crc32c``);
    without an alias index, use the kernel's convention that ``crc32c_generic`` provides
    ``crc32c``."""
    bare = name.removeprefix("crypto_")
    for candidate in (name, bare, f"{bare}_generic"):
        if candidate in index:
            return candidate
    return None


def did_you_mean(name: str, choices: Mapping[str, Module]) -> str:
    """`` (did you mean 'x'?)`` for the closest module name, or nothing."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_wanted(index: Mapping[str, Module], wanted: list[str]) -> list[str]:
    """Normalize the requested names; raise one error listing every unknown one."""
    names = [normalize_name(w) for w in wanted]
    problems = [f"unknown kernel module {w!r}{did_you_mean(n, index)}"
                for w, n in zip(wanted, names, strict=True) if n not in index]
    if problems:
        raise BuildError("\n".join(problems),
                         hint="module names are file names without .ko, '-' and '_' alike")
    return names


def walk_closure(index: Mapping[str, Module], names: list[str]) -> dict[str, tuple[str, ...]]:
    """Every module reached from ``names`` mapped to the modules it must follow."""
    before: dict[str, tuple[str, ...]] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in before:
            continue
        module = index[name]
        for dep in module.depends:
            if dep not in index:
                raise BuildError(f"kernel module {name!r} ({module.relpath}) depends on "
                                 f"{dep!r}, which is not among the kernel's modules")
        soft = [s for s in (find_softdep(index, n) for n in module.softdeps_pre) if s]
        before[name] = tuple(dict.fromkeys([*module.depends, *soft]))
        pending.extend(before[name])
    return before


def sort_load_order(before: dict[str, tuple[str, ...]]) -> list[str]:
    """Topological order, dependencies first, ties broken by name (Kahn's algorithm)."""
    waiting = {name: set(deps) for name, deps in before.items()}
    users: dict[str, list[str]] = {name: [] for name in before}
    for name, deps in before.items():
        for dep in deps:
            users[dep].append(name)
    ready = [name for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for user in users[name]:
            waiting[user].discard(name)
            if not waiting[user]:
                heapq.heappush(ready, user)
    if len(order) != len(before):
        cycle = sorted(set(before) - set(order))
        raise BuildError(f"kernel modules depend on each other in a cycle: {', '.join(cycle)}")
    return order


def find_module_closure(index: Mapping[str, Module], wanted: list[str]) -> list[Module]:
    """``wanted`` with their dependencies and pre-softdeps, in insmod order."""
    names = check_wanted(index, wanted)
    order = sort_load_order(walk_closure(index, names))
    log.debug("kernel module closure of %s: %s", ", ".join(wanted), " ".join(order))
    return [index[name] for name in order]


def render_modules_dep(modules: list[Module]) -> str:
    """modules.dep for ``modules`` (in load order): each module with all its hard dependencies,
    ordered like depmod writes them, deepest last, since modprobe loads the list from the end."""
    position = {m.name: i for i, m in enumerate(modules)}
    by_name = {m.name: m for m in modules}
    lines = []
    for module in modules:
        deps = transitive_depends(module, by_name)
        deps.sort(key=lambda name: -position[name])
        lines.append(": ".join([module.relpath, " ".join(by_name[d].relpath for d in deps)])
                     .rstrip())
    return "".join(line + "\n" for line in lines)


def transitive_depends(module: Module, by_name: dict[str, Module]) -> list[str]:
    """Names of every module ``module`` needs, directly or not (softdeps excluded, as in depmod)."""
    seen: set[str] = set()
    pending = list(reversed(module.depends))
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        if name not in by_name:
            raise BuildError(f"kernel module {module.name!r} depends on {name!r}, "
                             "which is not among the modules to install")
        seen.add(name)
        pending.extend(by_name[name].depends)
    return sorted(seen)


def render_modules_alias(modules: list[Module]) -> str:
    """modules.alias as depmod writes it, so ``modprobe <alias>`` finds the module."""
    lines = ["# Aliases extracted from modules themselves."]
    lines += [f"alias {alias} {m.name}" for m in modules for alias in m.aliases]
    return "".join(line + "\n" for line in lines)


def install_modules(tree: Tree, kernel_version: str, modules: list[Module], origin: str) -> None:
    """Put ``modules`` (in load order) decompressed under /lib/modules/<ver> with the index
    files BusyBox modprobe reads; the archive is compressed as a whole, so per-file compression
    would only cost space."""
    base = f"/lib/modules/{kernel_version}"
    for module in modules:
        tree.add_file(f"{base}/{module.relpath}", data=module.read(), mode=0o644, origin=origin)
    index_files = {
        "modules.dep": render_modules_dep(modules),
        "modules.alias": render_modules_alias(modules),
        "modules.builtin": "",
        "modules.order": "".join(f"{m.relpath}\n" for m in modules),
    }
    for name, text in index_files.items():
        tree.add_file(f"{base}/{name}", data=text.encode(), mode=0o644, origin=origin)


# When /init loads a module, by where it sits in the kernel tree (docs/discovery.md, "Boot
# timing"): network drivers and the virtio bus they may sit on first, so DHCP can start; disks,
# USB and every other driver, then filesystems, in the background while discovery runs.
NETWORK, STORAGE, FILESYSTEMS = "network", "storage", "filesystems"
LOAD_GROUP_FOLDERS = ((NETWORK, ("kernel/drivers/net/", "kernel/net/", "kernel/drivers/virtio/")),
                      (FILESYSTEMS, ("kernel/fs/",)))
# Buses whose devices exist before their drivers load (the virtio bus once virtio_pci is in): a
# module with aliases there is loaded early only when a device without a driver matches one.
HOST_BUS_ALIASES = ("pci:", "of:", "platform:", "acpi", "virtio:", "amba:")
SAFE_FS_TYPE_RE = re.compile(r"^[a-z0-9_]+$")  # written into the script as a plain word


@dataclass(frozen=True)
class LoadStep:
    """One module /init loads, and its device aliases on host buses (modules.alias glob
    patterns); with none, nothing says which hardware needs it, so it is always loaded early."""

    module: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadPlan:
    """The modules /init loads, by group, each in the recipe's order."""

    network: tuple[LoadStep, ...] = ()
    storage: tuple[LoadStep, ...] = ()
    filesystems: tuple[LoadStep, ...] = ()
    # The filesystem type each filesystem module registers (its first ``fs-`` alias), in order:
    # ``mount -t TYPE`` makes the kernel load that module on demand.
    filesystem_types: tuple[str, ...] = ()
    # What a USB stick is mounted with: the first filesystem module (vfat in the base recipes)
    # and the filesystem group's modules that register no type (codepage and charset tables).
    # Discovery loads them while a stick's SCSI scan runs, instead of three on-demand loads
    # at mount time.
    stick_filesystem: tuple[str, ...] = ()

    @property
    def storage_aliases(self) -> tuple[str, ...]:
        """Every storage driver's host-bus aliases: a match means a disk may show up."""
        return tuple(dict.fromkeys(a for step in self.storage for a in step.aliases))


def make_load_plan(wanted: Sequence[str], modules: Sequence[Module]) -> LoadPlan:
    """Group ``wanted`` (the recipe's names) by when they are needed; a name whose file is not
    among ``modules`` counts as storage (loaded in the background)."""
    by_name = {m.name: m for m in modules}
    groups: dict[str, list[LoadStep]] = {NETWORK: [], STORAGE: [], FILESYSTEMS: []}
    types: list[str] = []
    first_fs: list[str] = []
    tables: list[str] = []
    for name in dict.fromkeys(normalize_name(w) for w in wanted):
        module = by_name.get(name)
        path = module.relpath if module else ""
        group = next((g for g, folders in LOAD_GROUP_FOLDERS if path.startswith(folders)), STORAGE)
        aliases = tuple(a for a in module.aliases if a.startswith(HOST_BUS_ALIASES)) if module else ()
        groups[group].append(LoadStep(name, aliases))
        fs = [a.removeprefix("fs-") for a in (module.aliases if module else ()) if a.startswith("fs-")]
        if group == FILESYSTEMS and fs and SAFE_FS_TYPE_RE.match(fs[0]):
            types.append(fs[0])
            first_fs = first_fs or [name]
        elif group == FILESYSTEMS and not fs:
            tables.append(name)
    return LoadPlan(tuple(groups[NETWORK]), tuple(groups[STORAGE]), tuple(groups[FILESYSTEMS]),
                    tuple(dict.fromkeys(types)), tuple(first_fs + tables) if first_fs else ())
