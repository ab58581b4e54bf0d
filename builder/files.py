"""Files a user names, opened without trusting them: regular files only (a FIFO would block, a
device such as /dev/zero never ends), and read within a size bound."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from builder.errors import BuildError

KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileRefused(BuildError):
    """A named file that is missing, unreadable, not a regular file or too large; ``reason``
    says which without the path, so callers can put their own name in front."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def umask() -> int:
    """The process umask, read without changing it: ``os.umask`` sets it while it reads, which
    would give a file another thread creates meanwhile the wrong mode."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(executable: bool = False) -> int:
    """The mode ``open()`` would give a new file, 0644 (0755 ``executable``) under umask 022:
    for files written through a temporary file, which ``mkstemp`` makes 0600."""
    return (0o777 if executable else 0o666) & ~umask()


def describe_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words: 'a FIFO', 'a folder'..."""
    return next((word for test, word in KINDS if test(mode)), "not a regular file")


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading; FileRefused when it is not a regular file. Never blocks: a
    FIFO is opened non-blocking and refused by what fstat says of the open file."""
    try:
        before = os.stat(path)  # refuse devices before opening them (opening may act)
        if not stat.S_ISREG(before.st_mode):
            raise FileRefused(path, f"not a regular file ({describe_kind(before.st_mode)})")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileRefused(path, "no such file") from None
    except OSError as exc:
        raise FileRefused(path, f"cannot read: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # swapped between stat and open
        os.close(fd)
        raise FileRefused(path, f"not a regular file ({describe_kind(mode)})")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``; FileRefused when it holds more than ``limit``."""
    with open_regular(path) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise FileRefused(path, f"cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise FileRefused(path, f"larger than {format_size(limit)}, the most this file may be")
    return data


def format_size(size: int) -> str:
    """``262144`` -> ``256 KiB``; sizes that are no whole KiB or MiB stay in bytes."""
    if size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    return f"{size >> 10} KiB" if size % 1024 == 0 else f"{size} bytes"
