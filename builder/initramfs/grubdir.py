"""GRUB platform folders pruned to the modules a NOS install needs.

``grub-install`` reads a platform folder (``/usr/lib/grub/i386-pc``, ``.../x86_64-efi``): the
images it assembles the core image from (``kernel.img``, ``boot.img``, ...), ``modinfo.sh``,
``moddep.lst`` for the modules' dependencies and the other ``*.lst`` files, which it copies to
``<boot>/grub/<platform>`` with every module present. The folder is kept coherent: the listed
modules and everything they depend on, and lists that name only modules that are there.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from builder.components.unpacked import resolve_inside
from builder.errors import BuildError
from builder.initramfs.tree import Tree
from builder.recipe.component import GrubFolder

MODDEP = "moddep.lst"
KEPT_SUFFIXES = (".img", ".lst")  # the core image's parts, and GRUB's module lists
KEPT_NAMES = ("modinfo.sh",)  # grub-install reads the target's CPU and platform from it


def read_moddep(text: str) -> dict[str, list[str]]:
    """``module: dep dep`` lines as a mapping."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if sep:
            deps[name.strip()] = rest.split()
    return deps


def module_closure(deps: dict[str, list[str]], wanted: list[str], where: str) -> set[str]:
    """``wanted`` and every module they depend on; an unknown name is an error."""
    unknown = [m for m in wanted if m not in deps]
    if unknown:
        raise BuildError(f"{where}: no GRUB module {', '.join(map(repr, unknown))} in its "
                         f"{MODDEP}", hint="the module names are the .mod files of that folder")
    found: set[str] = set()
    pending = list(wanted)
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending += deps.get(name, [])
    return found


def prune_list(name: str, text: str, modules: set[str]) -> str:
    """A module list with only the lines about ``modules``: ``moddep.lst`` names the module
    first (``mod: deps``), the others last (``command: mod``, ``*cmd: mod``) or alone."""
    kept = []
    for line in text.splitlines():
        head, sep, tail = line.partition(":")
        module = head.strip() if name == MODDEP else (tail if sep else head).strip()
        if module in modules:
            kept.append(line)
    return "".join(f"{line}\n" for line in kept)


def install_grub_folder(tree: Tree, root: Path, grub: GrubFolder, origin: str) -> set[str]:
    """Put ``grub.folder`` from the unpacked package at ``root`` into the tree, pruned to
    ``grub.modules`` and their dependencies; return the module names installed."""
    host = resolve_inside(root, grub.folder, follow_last=True)
    moddep = resolve_inside(root, posixpath.join(grub.folder, MODDEP), follow_last=True)
    if not moddep.is_file():
        raise BuildError(f"{origin}: {grub.folder} is no GRUB platform folder (no {MODDEP})")
    deps = read_moddep(moddep.read_text())
    modules = module_closure(deps, grub.modules, f"{origin} {grub.folder}")
    for entry in sorted(host.iterdir()):
        dest = posixpath.join(grub.folder, entry.name)
        # A link in the folder is followed inside the package, never to the build machine.
        path = resolve_inside(root, posixpath.join(grub.folder, entry.name), follow_last=True)
        if not path.is_file():
            continue
        if entry.suffix == ".mod" and entry.stem in modules:
            tree.add_file(dest, source=path, mode=0o644, origin=origin)
        elif entry.suffix == ".lst":
            text = prune_list(entry.name, path.read_text(), modules)
            tree.add_file(dest, data=text.encode(), mode=0o644, origin=origin)
        elif entry.suffix in KEPT_SUFFIXES or entry.name in KEPT_NAMES:
            tree.add_file(dest, source=path, mode=0o644, origin=origin)
    return modules
