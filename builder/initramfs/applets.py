"""BusyBox applet links beside real tools: which BusyBox /init installs them from, and which
links it removes again so that a real tool is the only program of its name in PATH.

Debian's busybox-static runs its own applet for a name it knows (partprobe, fdisk, mount...)
from its shell, ``env``, ``xargs`` or ``find -exec`` even when a real tool comes first in PATH;
Debian's dynamically linked busybox runs whatever PATH finds. The installers' shell (/bin/sh)
is the dynamic one when the toolset brings it, and its applet links are made first, so every
name an installer runs goes through PATH; /init and discovery keep busybox-static.
"""

from __future__ import annotations

import posixpath

from builder.initramfs.tree import Kind, Tree

# Where /init and /etc/profile look for programs, in their PATH order.
PATH_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
STATIC_BUSYBOX = "/bin/busybox"
SHELL = "/bin/sh"


def _is_busybox(path: str) -> bool:
    return posixpath.basename(path) == "busybox"


def resolve_link(tree: Tree, path: str) -> str:
    """Follow symlinks inside the tree (at most 40, as the kernel does) to the final path."""
    for _ in range(40):
        entry = tree.get(path)
        if entry is None or entry.kind is not Kind.SYMLINK:
            return path
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), entry.target))
    return path


def find_shell_busybox(tree: Tree) -> str | None:
    """The BusyBox /bin/sh is, when it is another one than busybox-static's /bin/busybox."""
    if SHELL not in tree:
        return None
    target = resolve_link(tree, SHELL)
    entry = tree.get(target)
    if entry is None or entry.kind is not Kind.FILE:
        return None
    return target if _is_busybox(target) and target != STATIC_BUSYBOX else None


def find_shadowed(tree: Tree, owners: dict[str, str]) -> list[str]:
    """The paths in PATH folders where an applet link /init makes would stand beside one of the
    components' real tools of the same name, which the image has in another PATH folder."""
    real: set[str] = set()
    for path in owners:
        folder, name = posixpath.split(path)
        entry = tree.get(path)
        if (folder in PATH_DIRS and entry is not None and entry.kind in (Kind.FILE, Kind.SYMLINK)
                and not _is_busybox(path) and not _is_busybox(resolve_link(tree, path))):
            real.add(name)
    return [posixpath.join(folder, name) for folder in PATH_DIRS for name in sorted(real)
            if posixpath.join(folder, name) not in tree]
