"""Bounds that keep ``serve`` answering under hostile load: per-address and total connection
caps, a deadline for a new connection's first request headers, and rate-limited log lines
without tracebacks. Timeouts for keep-alive, report bodies and stalled downloads are applied
by ``builder.factory.serve`` with the values of ``Limits``."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Descriptors kept free for the listening sockets, log and record files, the loop itself.
RESERVE = 48
# The loggers whose lines an attacker can provoke: rate-limited, tracebacks dropped.
LOUD = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "asyncio", "builder.factory.serve",
        "builder.factory.limits")


@dataclass(frozen=True)
class Limits:
    """The server's bounds (docs/factory.md, "Bounds")."""

    per_address: int = 32  # open connections from one client address
    header_timeout: float = 10.0  # seconds for a new connection's first request headers
    idle_timeout: float = 15.0  # keep-alive: seconds between requests on one connection
    body_timeout: float = 30.0  # seconds to receive a report's body
    send_timeout: float = 60.0  # seconds a client may take to accept one chunk of a download
    max_connections: int | None = None  # None: from the descriptor limit (connection_budget)
    log_burst: int = 20  # lines of one kind per window; the rest are counted
    log_window: float = 60.0


def connection_budget() -> int:
    """Open connections the descriptor limit allows: each may hold a file open while it
    downloads, so half of what is left after RESERVE."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(8, (soft - RESERVE) // 2)


class Tracker:
    """Open connections per client address and in all; says which new ones to refuse."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.budget = limits.max_connections or connection_budget()
        self.open: dict[str, int] = {}
        self.total = 0
        self.refused = 0
        self.expired = 0

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and not counted) when over a cap."""
        count = self.open.get(address, 0)
        if self.total >= self.budget or (self.limits.per_address and count >= self.limits.per_address):
            self.refused += 1
            log.warning("refused a connection from %s: %d open from it, %d in all (caps %d, %d)",
                        address, count, self.total, self.limits.per_address, self.budget)
            return False
        self.open[address] = count + 1
        self.total += 1
        return True

    def release(self, address: str) -> None:
        """A counted connection closed."""
        self.total -= 1
        left = self.open.pop(address, 1) - 1
        if left > 0:
            self.open[address] = left


class Guard(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: refuses it over a cap and closes it when
    its first request's headers do not arrive in time (aiohttp's keep-alive timeout bounds
    the wait for every later request)."""

    def __init__(self, inner: Any, tracker: Tracker) -> None:
        self.inner = inner
        self.tracker = tracker
        self.address: str | None = None
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "unknown"
        if not self.tracker.admit(address):
            transport.abort()
            return
        self.address, self.transport = address, transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.tracker.limits.header_timeout, self._expire)
        self.inner.connection_made(transport)

    def _expire(self) -> None:
        self._timer = None
        self.tracker.expired += 1
        log.info("closed a connection from %s: no request headers within %.0f s", self.address,
                 self.tracker.limits.header_timeout)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.address is None:
            return
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.address is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.tracker.release(self.address)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class RateLimit(logging.Filter):
    """At most ``burst`` lines of one kind (logger and message template) per ``window``
    seconds; the first line of the next window says how many were dropped. Tracebacks are
    dropped unless the logger is at DEBUG: bad input must not fill the log."""

    def __init__(self, burst: int, window: float) -> None:
        super().__init__()
        self.burst, self.window = burst, window
        self._seen: dict[tuple[str, str], list[float]] = {}  # kind -> [window start, lines, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        if record.name == "aiohttp.server" and str(record.msg).startswith("Error handling request"):
            # aiohttp's line for a request it cannot parse: the client's fault, not the server's.
            record.levelno, record.levelname = logging.INFO, "INFO"
        kind = (record.name, str(record.msg))
        now = time.monotonic()
        entry = self._seen.get(kind)
        if entry is None or now - entry[0] >= self.window:
            dropped = int(entry[2]) if entry else 0
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[kind] = [now, 1, 0]
            if dropped:
                record.msg = f"({dropped} similar lines not shown) {record.msg}"
            return True
        if entry[1] >= self.burst:
            entry[2] += 1
            return False
        entry[1] += 1
        return True


def install_log_limits(limits: Limits) -> RateLimit:
    """Attach one RateLimit to every logger in LOUD; returns it for ``remove_log_limits``."""
    limiter = RateLimit(limits.log_burst, limits.log_window)
    for name in LOUD:
        logging.getLogger(name).addFilter(limiter)
    return limiter


def remove_log_limits(limiter: RateLimit) -> None:
    """Undo ``install_log_limits``."""
    for name in LOUD:
        logging.getLogger(name).removeFilter(limiter)
