"""Download progress: a redrawn line on a terminal, nothing extra in logs."""

from __future__ import annotations

import io

from builder.progress import DownloadProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_line_ends_at_100_percent() -> None:
    out = Terminal()
    advance = DownloadProgress(out).start("http://mirror.invalid/pool/x/busybox.deb", 3_000_000)
    for _ in range(3):
        advance(1_000_000)
    text = out.getvalue()
    assert text.startswith("\r  busybox.deb")
    assert text.endswith("     3.0 MB 100%\n")


def test_unknown_size_shows_bytes_only() -> None:
    out = Terminal()
    DownloadProgress(out).start("http://mirror.invalid/a", None)(2_500_000)
    assert out.getvalue().rstrip().endswith("2.5 MB")


def test_not_a_terminal_writes_nothing() -> None:
    out = io.StringIO()
    advance = DownloadProgress(out).start("http://mirror.invalid/a", 10)
    advance(10)
    assert out.getvalue() == ""
