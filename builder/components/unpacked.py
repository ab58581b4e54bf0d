"""Reading an unpacked package tree from the cache without leaving it: paths are resolved
inside the tree as the guest's kernel would resolve them (an absolute symlink starts again at
the tree's root, '..' stops there), never out to the build machine; and the modes the package
gave the files whose special bits the cache dropped."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from builder.errors import BuildError

MAX_HOPS = 40  # symlinks followed for one path, as Linux (ELOOP)
# Setuid, setgid, sticky and world-writable: what the cache never keeps on a file, and what
# the image keeps only where a recipe names the path (initramfs.keep_modes).
RISKY_BITS = 0o7002


def modes_file(tree: Path) -> Path:
    """Where the modes dropped from ``tree`` (``unpacked/<sha256>``) are written down."""
    return tree.with_name(f"{tree.name}.modes.json")


def resolve_inside(root: Path, path: str, follow_last: bool = False) -> Path:
    """The host path of in-tree ``path`` under ``root`` with every symlink on the way resolved
    inside ``root`` (the last one too with ``follow_last``); it may not exist."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            del done[-1:]  # '..' at the root stays there, as in a chroot
            continue
        host = root.joinpath(*done, part)
        if (parts or follow_last) and host.is_symlink():
            hops += 1
            if hops > MAX_HOPS:
                raise BuildError(f"{root}: {path}: more than {MAX_HOPS} symlinks on the way")
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return root.joinpath(*done)


def package_mode(root: Path, host: Path) -> int:
    """The mode the package gave ``host`` (a file or folder under ``root``), special bits
    included: the cache's own mode, unless the cache dropped bits from it."""
    rel = host.relative_to(root).as_posix()
    return _dropped_modes(root).get(rel, host.lstat().st_mode & 0o7777)


@functools.cache
def _dropped_modes(root: Path) -> dict[str, int]:
    """The sidecar of an unpacked tree (``deb.unpack_deb`` writes it); none for other roots."""
    try:
        data = json.loads(modes_file(root).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BuildError(f"{modes_file(root)}: unreadable ({exc})",
                         hint="delete it and the folder beside it; the next build unpacks again") from None
    return {str(k): int(v) for k, v in data.items()}
