"""A device's state, derived from what its events left in its row: one pure function, so the
page, ``status --json`` and ``/metrics`` agree and tests need no server.

The states (docs/factory.md, "State model"): ``waiting`` (listed in the site file, never
seen), ``discovering``, ``downloading`` (with a percent), ``installing``, ``installed``,
``failed`` (with a reason: the device's report, or the server's own cause such as a missing
installer), ``silent`` (no word for longer than the site's ``status.silent_after`` while
neither waiting nor finished) and ``conflict`` (the last report came signed by another key).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATES = ("waiting", "discovering", "downloading", "installing", "installed", "failed",
          "silent", "conflict")
SILENT_AFTER = 900  # seconds, unless the site file's status.silent_after says otherwise
DISCOVERY_PHASES = frozenset({"discovery", "discover", "discovering"})
DOWNLOAD_PHASES = frozenset({"download", "downloading"})
FINISHED_PHASES = frozenset({"done", "installed"})


@dataclass(frozen=True)
class State:
    """The state word, the percent while downloading, and the one-line reason."""

    state: str
    percent: int | None = None
    reason: str | None = None


def derive(row: Mapping[str, Any], now: float, silent_after: float = SILENT_AFTER) -> State:
    """The state of the device whose row is ``row`` (the columns of the ``devices`` table)."""
    conflict_at, reported_at = row.get("conflict_at"), row.get("reported_at")
    if conflict_at is not None and (reported_at is None or conflict_at >= reported_at):
        return State("conflict", reason=_conflict_reason(row))
    if row.get("first_seen") is None:
        return State("waiting")
    phase, result = row.get("phase") or "discovery", row.get("result") or "running"
    if result == "fail":
        message = row.get("message")
        return State("failed", reason=_line(message) if message else f"{phase} failed")
    if row.get("failure"):
        return State("failed", reason=_line(row["failure"]))
    if result == "ok" and phase in FINISHED_PHASES:
        return State("installed")
    last_seen = row.get("last_seen") or row["first_seen"]
    if now - last_seen > silent_after:
        return State("silent", reason=f"no word for {_quiet(now - last_seen)}")
    if phase in DISCOVERY_PHASES:
        return State("discovering")
    if phase in DOWNLOAD_PHASES and result == "running":
        size, done = row.get("size") or 0, row.get("progress") or 0
        return State("downloading", min(100, max(0, 100 * done // size)) if size > 0 else 0)
    return State("installing")


def _quiet(seconds: float) -> str:
    """``17 min``; under a minute (a short ``silent_after``) ``42 s``, not ``0 min``."""
    return f"{math.floor(seconds)} s" if seconds < 60 else f"{math.floor(seconds / 60)} min"


def _conflict_reason(row: Mapping[str, Any]) -> str:
    conflicts = row.get("conflicts") or []
    last = conflicts[-1] if conflicts else {}
    return _line(f"a report signed by another key ({last.get('fingerprint', '?')}) was refused: "
                 f"{last.get('note', 'shown, not applied')}")


def _line(text: str) -> str:
    """One line of at most 200 characters."""
    first = " ".join(str(text).split())
    return first if len(first) <= 200 else first[:197] + "..."
