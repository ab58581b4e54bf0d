"""Facts read from files that do not change in place, remembered between builds.

A warm build parses the same ELF headers and kernel module info every time (pyelftools: ~0.3 s
of the default recipe) and lists the same 4,000-file modules folder. These files sit in the
cache's unpacked packages, which are never modified, or are local files a recipe names. Each fact
is kept in one JSON file in the cache, keyed by what it is, the file's path, size and mtime (as
make decides): a changed file has a new key, so a stale fact is never used.

``remember`` opens the file for the duration of a build; outside one (tests, other commands)
facts are kept in memory only.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from builder.components.cache import write_atomic

T = TypeVar("T")
FORMAT = "onie-builder-facts/1"  # bumped whenever a kind's stored value changes shape
KEEP = 20_000  # past this many facts, a save keeps only those the build used


class Facts:
    """The facts of one file (or of none: memory only)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._known: dict[str, Any] = {}
        self._used: set[str] = set()
        self._changed = False
        if path is not None:
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                doc = None
            if isinstance(doc, dict) and doc.get("format") == FORMAT:
                self._known = doc.get("facts", {})

    def recall(self, kind: str, file: Path, compute: Callable[[], T],
               encode: Callable[[T], Any], decode: Callable[[Any], T]) -> T:
        """The fact ``kind`` about ``file``: remembered, or computed (and remembered)."""
        st = os.stat(file)
        key = f"{kind}:{os.fspath(file)}:{st.st_size}:{st.st_mtime_ns}"
        self._used.add(key)
        if key in self._known:
            return decode(self._known[key])
        value = compute()
        self._known[key] = encode(value)
        self._changed = True
        return value

    def save(self) -> None:
        """Write the facts back when any was added (atomically; a concurrent build may win)."""
        if self.path is None or not self._changed:
            return
        known = self._known
        if len(known) > KEEP:
            known = {k: v for k, v in known.items() if k in self._used}
        write_atomic(self.path, json.dumps({"format": FORMAT, "facts": known},
                                           separators=(",", ":")).encode())
        self._changed = False


_current = Facts()


def current() -> Facts:
    """The facts of the build in progress (memory only outside a build)."""
    return _current


@contextlib.contextmanager
def remember(path: Path) -> Iterator[Facts]:
    """Use the facts at ``path`` until the block ends, then save them."""
    global _current
    previous, _current = _current, Facts(path)
    try:
        yield _current
        _current.save()
    finally:
        _current = previous
