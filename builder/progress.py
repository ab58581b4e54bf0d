"""Progress for long work: a live line on a terminal, plain lines in logs and CI."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Advance = Callable[[int], None]


class DownloadProgress:
    """Reports a download's bytes; on a terminal the line is redrawn at most ten times a second."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def start(self, url: str, total: int | None) -> Advance:
        """Begin one download; returns the function the downloader calls with each chunk size."""
        name = url.rsplit("/", 1)[-1] or url
        done = 0
        last = 0.0

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            finished = total is not None and done >= total
            if not self.live or (now - last < 0.1 and not finished):
                return
            last = now
            share = f" {100 * done // total:3d}%" if total else ""
            self.stream.write(f"\r  {name[:50]:<50} {done / 1e6:8.1f} MB{share}")
            if finished:
                self.stream.write("\n")
            self.stream.flush()

        return advance
