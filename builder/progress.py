"""Progress for long work: phases, bytes, rate and ETA drawn by rich on a terminal; plain
lines on a pipe (logs, CI).

A build moves through ``Phase``s; ``Progress.step`` is the one call a stage makes when it
starts one, ``Progress.download`` the callback the cache gives each download's chunk sizes,
``Progress.unpack`` the one the cache calls before unpacking a package. The plain lines are
those the build always printed (``==> <platform>: <what>``), so CI logs stay greppable.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

log = logging.getLogger("builder")

Advance = Callable[[int], None]


class Phase(enum.Enum):
    """The stages of a build, in order; downloads and unpacking happen while resolving."""

    RESOLVE = "resolve"
    DOWNLOAD = "download"
    UNPACK = "unpack"
    ASSEMBLE = "assemble"
    COMPRESS = "compress"
    IMAGES = "images"
    RECORD = "record"  # the manifest, the SBOMs and the provenance
    DONE = "done"


Step = Callable[[Phase, str], None]


def plain_step(phase: Phase, message: str) -> None:
    """The step of a build without a display (batch workers, library callers): one log line."""
    log.info("==> %s", message)


class Progress:
    """One build's display: a live rich table on a terminal, log lines otherwise.

    Use it as a context manager around the work; outside it (or on a pipe) every call falls
    back to plain lines, so library code never has to ask which one it has.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        # -q (logging above INFO) turns the display off with the plain lines.
        self.live = (self.stream.isatty() and log.isEnabledFor(logging.INFO)
                     if live is None else live)
        self._rich: RichProgress | None = None
        self._phase_task: TaskID | None = None
        self._phase = Phase.RESOLVE
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        if self.live:
            self._rich = make_display(self.stream)
            self._rich.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def step(self, phase: Phase, message: str) -> None:
        """A stage starts: ``message`` is the line a log gets (``<platform>: <what>``)."""
        if self._rich is None:
            plain_step(phase, message)
            return
        self._rich.console.print(f"==> {message}", markup=False, highlight=False)
        with self._lock:
            self._phase = phase
            if self._phase_task is None:
                self._phase_task = self._rich.add_task("", total=None)
            self._rich.update(self._phase_task, description=f"{phase.value:<9}")

    def unpack(self, name: str) -> None:
        """A package is being unpacked into the cache (a cache miss)."""
        if self._rich is None:
            log.info("unpacking %s", name)
            return
        self._show(Phase.UNPACK, name)

    def download(self, url: str, total: int | None) -> Advance:
        """Begin one download; returns the function the downloader calls with each chunk size."""
        name = url.rsplit("/", 1)[-1] or url
        start = time.monotonic()
        done = 0
        rich = self._rich
        task = (rich.add_task(f"{Phase.DOWNLOAD.value:<9} {name[:40]}", total=total, bytes=True)
                if rich else None)
        if rich is not None:
            self._show(Phase.DOWNLOAD, name)

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if rich is not None and task is not None:
                rich.advance(task, n)
            if total is None or done < total or done - n >= total:
                return
            seconds = max(time.monotonic() - start, 1e-3)
            if rich is not None and task is not None:
                rich.remove_task(task)
                self._show(self._phase, "")
            else:
                log.info("  %s: %s in %.1f s (%s/s)", name, human_bytes(done), seconds,
                         human_bytes(done / seconds))

        return advance

    def _show(self, phase: Phase, detail: str) -> None:
        """The phase row names what is happening now, without changing the recorded phase."""
        if self._rich is None:
            return
        with self._lock:
            if self._phase_task is None:
                self._phase_task = self._rich.add_task("", total=None)
            self._rich.update(self._phase_task,
                              description=f"{phase.value:<9} {detail[:40]}".rstrip())


def make_display(stream: TextIO) -> RichProgress:
    """The columns: what, a bar, bytes and rate (downloads only), time left, time spent."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class BytesOnly(ProgressColumn):
        """A byte column shown only on download rows; a phase row has no byte count."""

        def __init__(self, column: ProgressColumn) -> None:
            super().__init__()
            self.column = column

        def render(self, task: Task) -> Text:
            shown = self.column.render(task) if task.fields.get("bytes") else Text("")
            return shown if isinstance(shown, Text) else Text(str(shown))

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    BytesOnly(DownloadColumn()), BytesOnly(TransferSpeedColumn()),
                    TimeRemainingColumn(), TimeElapsedColumn(), console=Console(file=stream),
                    transient=True, redirect_stdout=False, redirect_stderr=True)


class CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is now: a log handler made before the
    display starts then prints above it (rich swaps ``sys.stderr`` while it draws)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units, as the size lines print them (kB, MB, GB)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"
