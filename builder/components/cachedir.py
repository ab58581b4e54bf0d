"""The cache folder as a whole (``onie-builder cache info`` and ``cache prune``): what each
kind of entry holds, when it was last used, and pruning it by age and by size, least
recently used first, never an entry the current lock or the last build in ``out/`` names.

An entry is what a build makes or uses as one piece: a download (``blobs/``), an unpacked
package (``unpacked/<sha256>`` with its sidecar files), a parsed Packages index, a compressed
initramfs layer (``derived/``). Builds mark an entry used by setting its mtime
(``cache.touch``); entries from builds before that carry the time they were made.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError

# Kinds, in the order `cache info` lists them, with what each holds.
KINDS = {
    "debs": "downloaded Debian packages (blobs/)",
    "downloads": "other downloads: signed indexes, Packages and Sources files, URL sources (blobs/)",
    "indexes": "InRelease pointers and parsed Packages indexes (indexes/)",
    "unpacked": "unpacked package trees (unpacked/, trees/)",
    "layers": "compressed initramfs layers and remembered file facts (derived/)",
    "templates": "compiled Jinja2 templates (jinja2/)",
    "tmp": "unfinished downloads and unpacks (tmp/, unpacked/.*)",
}
DEFAULT_MAX_SIZE = 2 * 1000**3
SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Entry:
    """One prunable piece of the cache: its paths, kind, bytes and last use (epoch seconds)."""

    kind: str
    name: str
    paths: tuple[Path, ...]
    size: int
    used: float
    digest: str | None = None  # the package or file digest it stands for, if any


@dataclass
class Plan:
    """What a prune removes (or would, with --dry-run) and what it keeps."""

    total: int
    removed: list[Entry] = field(default_factory=list)
    protected: int = 0

    @property
    def freed(self) -> int:
        return sum(e.size for e in self.removed)


def parse_size(text: str) -> int:
    """Bytes from ``2G``, ``500M``, ``1.5GB`` or a plain number (powers of 1000)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if match is None:
        raise BuildError(f"--max-size: expected a size such as 2G or 500M, got {text!r}")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


def parse_age(text: str) -> float:
    """Seconds from ``30d``, ``12h``, ``2w``, ``90m`` or ``45s``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if match is None:
        raise BuildError(f"--older-than: expected an age such as 30d, 12h or 2w, got {text!r}")
    return float(match[1]) * AGE_UNITS[match[2]]


def scan(root: Path) -> list[Entry]:
    """Every entry under the cache folder ``root``, sorted by last use, oldest first."""
    entries = [*_blobs(root), *_indexes(root), *_unpacked(root), *_files(root, "derived", "layers"),
               *_files(root, "jinja2", "templates"), *_files(root, "tmp", "tmp")]
    return sorted(entries, key=lambda e: (e.used, e.name))


def summarize(root: Path, entries: list[Entry]) -> dict[str, object]:
    """`cache info`: where, the total, and each kind's entries, bytes, oldest and newest use."""
    kinds = {}
    for kind, what in KINDS.items():
        mine = [e for e in entries if e.kind == kind]
        kinds[kind] = {"what": what, "entries": len(mine), "bytes": sum(e.size for e in mine),
                       "oldest": min((e.used for e in mine), default=None),
                       "newest": max((e.used for e in mine), default=None)}
    return {"path": str(root), "bytes": sum(e.size for e in entries), "entries": len(entries),
            "kinds": kinds}


def in_use(lock: Path | None, out_dir: Path | None) -> set[str]:
    """Digests the current lock pins and the manifests of the builds in ``out_dir`` name:
    what the next build needs. Unreadable files protect nothing (they are not ours)."""
    found: set[str] = set()
    texts = [lock] if lock is not None and lock.is_file() else []
    if out_dir is not None and out_dir.is_dir():
        texts += sorted(out_dir.glob("*/manifest.json"))
    for path in texts:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found.update(SHA256.findall(text) if path.suffix == ".lock" else _manifest_digests(text))
    return found


def _manifest_digests(text: str) -> set[str]:
    try:
        components = json.loads(text).get("components", [])
        return {str(c["sha256"]) for c in components if isinstance(c, dict) and "sha256" in c}
    except (ValueError, AttributeError, TypeError):
        return set()


def plan_prune(entries: list[Entry], keep: set[str], max_size: int | None,
               older_than: float | None, now: float | None = None) -> Plan:
    """Entries to remove: every one last used more than ``older_than`` seconds ago, then the
    least recently used until the cache is at most ``max_size`` bytes; never one in ``keep``."""
    now = time.time() if now is None else now
    plan = Plan(total=sum(e.size for e in entries))
    left = plan.total
    for entry in entries:  # oldest first
        if entry.digest is not None and entry.digest in keep:
            plan.protected += 1
            continue
        too_old = older_than is not None and entry.used < now - older_than
        too_big = max_size is not None and left > max_size
        if too_old or too_big:
            plan.removed.append(entry)
            left -= entry.size
    return plan


def remove(entry: Entry) -> None:
    """Delete an entry; a folder is first renamed aside, so a reader sees it whole or not at all."""
    for path in entry.paths:
        if path.is_dir() and not path.is_symlink():
            aside = path.with_name(f".pruned-{path.name}-{os.getpid()}")
            try:
                os.rename(path, aside)
            except OSError:
                continue
            for folder, _, _ in os.walk(aside):  # package modes may have made folders read-only
                os.chmod(folder, 0o700)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _blobs(root: Path) -> Iterator[Entry]:
    for path in _walk_files(root / "blobs"):
        st = path.stat()
        with path.open("rb") as f:
            kind = "debs" if f.read(8) == b"!<arch>\n" else "downloads"
        yield Entry(kind, f"blobs/{path.name}", (path,), st.st_size, st.st_mtime, path.name)


def _indexes(root: Path) -> Iterator[Entry]:
    folder = root / "indexes"
    for path in sorted(folder.glob("*.json")):
        st = path.stat()
        yield Entry("indexes", f"indexes/{path.name}", (path,), st.st_size, st.st_mtime)
    parsed: dict[str, list[Path]] = {}
    for path in sorted((folder / "parsed").glob("*")):
        parsed.setdefault(path.name.split(".", 1)[0], []).append(path)
    for stem, paths in parsed.items():
        stats = [p.stat() for p in paths]
        yield Entry("indexes", f"indexes/parsed/{stem}", tuple(paths),
                    sum(s.st_size for s in stats), max(s.st_mtime for s in stats), stem)


def _unpacked(root: Path) -> Iterator[Entry]:
    for top in ("unpacked", "trees"):
        groups: dict[str, list[Path]] = {}
        folder = root / top
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            groups.setdefault(path.name.split(".")[0] or path.name, []).append(path)
        for key, paths in groups.items():
            unfinished = paths[0].name.startswith(".")
            size = sum(_size(p) for p in paths)
            used = max(p.lstat().st_mtime for p in paths)
            digest = key if SHA256.fullmatch(key) else None
            yield Entry("tmp" if unfinished else "unpacked", f"{top}/{paths[0].name}",
                        tuple(paths), size, used, digest)


def _files(root: Path, folder: str, kind: str) -> Iterator[Entry]:
    for path in _walk_files(root / folder):
        st = path.stat()
        yield Entry(kind, path.relative_to(root).as_posix(), (path,), st.st_size, st.st_mtime)


def _walk_files(folder: Path) -> list[Path]:
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs.sort()
        found += [Path(parent, n) for n in sorted(names) if not os.path.islink(Path(parent, n))]
    return found


def _size(path: Path) -> int:
    """Bytes of a file, or of every file below a folder (hard links once)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    seen: set[tuple[int, int]] = set()
    total = 0
    for parent, _, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(parent, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
