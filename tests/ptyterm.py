"""A program on a pseudo-terminal, watched and typed at as a user would, and a small screen model
to read what the terminal shows (tests/test_terminal.py, tests/test_boot_command.py)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def screen(data: bytes) -> list[str]:
    """The rows a terminal shows after ``data``: text, CR, LF, BS, ESC[K and ESC[J (to the end);
    other escape sequences are dropped."""
    rows, row, col = [""], 0, 0
    text = data.decode(errors="replace")
    i = 0
    while i < len(text):
        escape = re.match(r"\x1b\[[0-9;?]*([@-~])", text[i:])
        if escape:
            if escape.group(1) in "KJ":
                rows[row] = rows[row][:col]
            if escape.group(1) == "J":
                del rows[row + 1:]
            i += escape.end()
            continue
        char = text[i]
        i += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row += 1
            rows += [""] * (row + 1 - len(rows))
        elif char == "\b":
            col = max(col - 1, 0)
        elif char >= " ":
            line = rows[row].ljust(col)
            rows[row] = line[:col] + char + line[col + 1:]
            col += 1
    return [r.rstrip() for r in rows]


class Pty:
    """A program on a pseudo-terminal (its stdin, stdout and stderr), watched like a user would:
    ``expect`` waits for a pattern in the output after the previous match."""

    def __init__(self, argv: list[str]) -> None:
        self.master, self.slave = os.openpty()
        self.saved = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     start_new_session=True, cwd=ROOT)
        self.output = b""
        self.pos = 0

    def __enter__(self) -> Pty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def expect(self, pattern: bytes, timeout: float = 20) -> re.Match[bytes]:
        """Wait for ``pattern`` after the previous match; the match, in ``output``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (match := regex.search(self.output, self.pos)) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} in {self.output[-3000:]!r}"
            if select.select([self.master], [], [], remaining)[0]:
                self.output += os.read(self.master, 4096)
        self.pos = match.end()
        return match

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        """Stop the program if it still runs (SIGTERM: it stops what it started; then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        os.close(self.master)
        os.close(self.slave)
