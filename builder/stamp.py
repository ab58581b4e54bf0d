"""No-op rebuilds: a record of every input file's size and mtime from the last build.

Checked with stdlib only, before the heavy imports, so an up-to-date platform costs a few
``stat`` calls. Files are listed with their folders, so a file added to an overlay or a
template folder (which changes the folder's mtime) is noticed too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STAMPS = ".stamps"


def stamp_path(out_dir: Path, recipe_file: Path) -> Path:
    """Where the record for builds of ``recipe_file`` into ``out_dir`` lives."""
    key = hashlib.sha256(str(recipe_file.resolve()).encode()).hexdigest()[:16]
    return out_dir / STAMPS / f"{recipe_file.stem}-{key}.json"


def snapshot(paths: Iterable[Path]) -> dict[str, list[int]]:
    """Size and mtime of each path, and of every file and folder below a folder."""
    out: dict[str, list[int]] = {}
    for path in paths:
        for item in [path, *_walk(path)]:
            try:
                st = item.stat()
            except OSError:
                out[str(item)] = [-1, -1]
                continue
            out[str(item)] = [st.st_size, st.st_mtime_ns]
    return out


def _walk(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    found: list[Path] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found.extend(Path(root) / name for name in [*dirs, *sorted(files)])
    return found


def unchanged(files: dict[str, list[int]]) -> bool:
    """True when every recorded path still has the recorded size and mtime."""
    for name, (size, mtime) in files.items():
        try:
            st = os.stat(name)
        except OSError:
            if size != -1:
                return False
            continue
        if st.st_size != size or st.st_mtime_ns != mtime:
            return False
    return True


def outputs_present(final: Path, outputs: dict[str, Any]) -> bool:
    """True when every recorded output file is still there with its size."""
    for name, info in outputs.items():
        path = final / name
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return False
    return True


def read_stamp(path: Path) -> dict[str, Any] | None:
    """The record, or None when there is none or it cannot be read."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def find_fresh(out_dir: Path, recipe_file: Path, epoch: int, lock: Path | None,
               images: bool = True) -> dict[str, Any] | None:
    """The last record if a locked build with these inputs is already in ``out_dir``."""
    if lock is None:
        return None  # unlocked builds re-resolve: the archive may have moved on
    record = read_stamp(stamp_path(out_dir, recipe_file))
    if (record is None or record.get("epoch") != epoch or record.get("images") != images
            or record.get("lock") != str(lock.resolve())):
        return None
    final = out_dir / record.get("platform", "")
    if not unchanged(record.get("files", {})) or not outputs_present(final, record["outputs"]):
        return None
    return record
