"""FAT file system images without mounting: mkfs.vfat and mtools, reproducible byte for byte."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from builder.process import find_tool, run

# Room for the FAT tables, directories and cluster rounding on top of the files themselves.
OVERHEAD = 1024 * 1024


def volume_id(name: str) -> str:
    """A FAT volume serial derived from ``name`` (no randomness): 8 hex digits."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"onie-builder:fat:{name}").hex[:8].upper()


def make_vfat(path: Path, files: Mapping[str, Path | bytes], label: str, serial_of: str,
              epoch: int, size: int | None = None) -> Path:
    """Write a FAT image at ``path`` holding ``files`` (image path -> host file or bytes).

    The size is the files plus room, rounded to 1 MiB, unless ``size`` (bytes) is given.
    ``mkfs.vfat --invariant`` fixes the time fields mkfs writes; ``-i`` gives the serial;
    mtools stamps files and folders with SOURCE_DATE_EPOCH.
    """
    why = "to build FAT images (EFI system partitions, ONIE-BOOT)"
    mkfs = find_tool("mkfs.vfat", f"{why} (Debian package dosfstools)")
    mcopy = find_tool("mcopy", f"{why} (Debian package mtools)")
    total = sum(len(v) if isinstance(v, bytes) else v.stat().st_size for v in files.values())
    if size is None:
        size = -(-(total + total // 10 + OVERHEAD) // (1 << 20)) * (1 << 20)
    env = {"SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1"}
    path.unlink(missing_ok=True)
    run([mkfs, "--invariant", "-C", "-i", volume_id(serial_of), "-n", label, path,
         str(size // 1024)], env=env)
    with tempfile.TemporaryDirectory(prefix="fat-") as tmp:
        top = stage_files(Path(tmp), files, epoch)
        if top:
            run([mcopy, "-s", "-m", "-i", path, *sorted(top), "::/"], env=env)
    return path


def stage_files(root: Path, files: Mapping[str, Path | bytes], epoch: int) -> list[Path]:
    """Lay ``files`` out under ``root`` with every time set to ``epoch``; return the top items."""
    for name, content in sorted(files.items()):
        dest = root / name.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            shutil.copyfile(content, dest)
    for item in [*root.rglob("*"), root]:
        os.utime(item, (epoch, epoch), follow_symlinks=False)
    return sorted(root.iterdir())
