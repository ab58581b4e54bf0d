"""Progress: rich's live rows (phase, bytes, rate, ETA) on a terminal, plain lines in logs."""

from __future__ import annotations

import io
import logging

import pytest

from builder.progress import Phase, Progress, human_bytes


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def info_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="builder")


def test_plain_lines_name_each_step_and_each_finished_download(
        caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    with Progress(out) as progress:
        progress.step(Phase.RESOLVE, "x86_64-demo-r0: resolving components")
        progress.unpack("busybox-static")
        advance = progress.download("http://mirror.invalid/pool/b/busybox.deb", 3_000_000)
        for _ in range(3):
            advance(1_000_000)
        advance(0)  # a late empty chunk does not report the download twice
    assert out.getvalue() == ""  # nothing drawn on a pipe
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["==> x86_64-demo-r0: resolving components", "unpacking busybox-static"]
    assert len(lines) == 3
    assert lines[2].startswith("  busybox.deb: 3.0 MB in ") and lines[2].endswith("B/s)")


def test_unknown_size_reports_no_rate_line(caplog: pytest.LogCaptureFixture) -> None:
    with Progress(io.StringIO()) as progress:
        progress.download("http://mirror.invalid/a", None)(2_500_000)
    assert caplog.records == []


def test_terminal_draws_phases_and_download_rows(caplog: pytest.LogCaptureFixture) -> None:
    out = Terminal()
    with Progress(out) as progress:
        assert progress.live
        progress.step(Phase.COMPRESS, "x86_64-demo-r0: writing the initramfs (3 entries, xz)")
        advance = progress.download("http://mirror.invalid/pool/b/busybox.deb", 3_000_000)
        advance(500_000)
        advance(500_000)  # two samples: a rate and a time left
        assert progress._rich is not None
        progress._rich.refresh()
        drawn = out.getvalue()
        advance(2_000_000)
    # The step line stays above the display; the rows show the phase, bytes and rate.
    assert "==> x86_64-demo-r0: writing the initramfs (3 entries, xz)" in drawn
    assert "download  busybox.deb" in drawn
    assert "1.0/3.0 MB" in drawn
    assert "B/s" in drawn
    assert caplog.records == []  # no plain lines beside the live display


def test_quiet_turns_the_display_off() -> None:
    logging.getLogger("builder").setLevel(logging.WARNING)
    try:
        assert not Progress(Terminal()).live
    finally:
        logging.getLogger("builder").setLevel(logging.NOTSET)


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1_500, "1.5 kB"),
                                         (8_192_152, "8.2 MB"), (2.5e9, "2.5 GB")])
def test_human_bytes(n: float, text: str) -> None:
    assert human_bytes(n) == text
