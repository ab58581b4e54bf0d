"""Operating ``serve``: the access log, the Prometheus metrics of ``GET /metrics`` and the
downloads in flight that a graceful shutdown waits for, then cuts (docs/factory.md,
"Operations").

The access log is aiohttp's access-logger hook: it runs once per request after the response
ended (also when the client went away), and reads the byte count ``send_file`` keeps in the
request (``SENT``), so a cut download logs what was handed to the kernel, not its
Content-Length. The same hook counts requests and report errors for the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

ACCESS = logging.getLogger("builder.factory.access")
log = logging.getLogger(__name__)

# What send_file tells the access log: the device key and the bytes handed over.
DEVICE: web.RequestKey[str] = web.RequestKey("onie_device", str)
SENT: web.RequestKey[int] = web.RequestKey("onie_sent", int)
MAX_LOGGED_PATH = 200  # characters of a request's path and query in the access log
# The states of the status interface (docs/factory.md): always exported, 0 when none.
STATES = ("waiting", "discovering", "downloading", "installing", "installed", "failed", "silent",
          "conflict")
# Reports per group-committed batch: 1, 2, 4, ... 256 (the writer's BATCH, at most).
BATCH_BUCKETS = tuple(float(2**n) for n in range(9))
# Seconds one batch took to decide and commit: a sync of SQLite's WAL to a slow disk or a
# PostgreSQL round trip (milliseconds) up to a database in trouble (seconds).
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def state_counts(store: Any) -> dict[str, int]:
    """Devices per state over all devices: the one place the metrics ask the store."""
    return {str(k): int(v) for k, v in store.counts().items()}


def escape_path(raw: str) -> str:
    """``raw`` cut to MAX_LOGGED_PATH characters (``...`` marks a cut) with every character
    outside printable ASCII, and the backslash, written as an escape: one line, no terminal
    control from a client."""
    cut = len(raw) > MAX_LOGGED_PATH
    out = []
    for char in raw[:MAX_LOGGED_PATH]:
        code = ord(char)
        if 33 <= code < 127 and char != "\\":
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out) + ("..." if cut else "")


def bytes_sent(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """The body bytes a response handed over (headers not counted): send_file's own count,
    else the body's length (aiohttp counts headers too, and nothing a FileResponse sends with
    sendfile)."""
    sent = request.get(SENT)
    if sent is not None:
        return int(sent)
    if request.method == "HEAD" or not response.prepared:
        return 0
    if isinstance(response, web.FileResponse):
        return response.content_length or 0
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return len(response.body)
    return response.body_length


def access_line(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> str:
    """``ADDRESS DEVICE METHOD PATH STATUS BYTES SECONDS``, e.g.
    ``10.0.0.5 SN123 GET /onie-installer-x86_64.bin 206 10485760 1.532s``."""
    return (f"{request.remote or '-'} {request.get(DEVICE) or '-'} {escape_path(request.method)} "
            f"{escape_path(request.raw_path)} {response.status} {bytes_sent(request, response)} "
            f"{seconds:.3f}s")


class _DeviceStates(Collector):
    """``onie_serve_devices{state}``: read from the store at each scrape."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("onie_serve_devices", "Devices by state (every device of the "
                                   "site file and every device seen)", labels=["state"])
        counts = dict.fromkeys(STATES, 0) | dict(self.counts())
        for state, count in sorted(counts.items()):
            family.add_metric([state], count)
        yield family


@dataclass(eq=False)
class Download:
    """One download in flight: its connection, and whether shutdown cut it."""

    transport: asyncio.Transport | None
    cut: bool = False

    def cut_now(self) -> None:
        """End the download where it is: the socket's sending half is shut, so the client gets
        what is queued, then the end of the stream (a short body, no reset); the send that is
        waiting fails and the handler ends as for a client that went away."""
        self.cut = True
        if self.transport is None or self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        try:
            if sock is None:
                raise OSError("no socket")
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.transport.abort()


class Ops:
    """The metrics registry of one app and its downloads in flight."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.bytes_served = Counter("onie_serve_sent_bytes", "Body bytes of files handed to "
                                    "clients (installers and out/)", registry=self.registry)
        self.requests = Counter("onie_serve_requests", "Requests answered, by status class",
                                ["code"], registry=self.registry)
        self.report_errors = Counter("onie_serve_report_errors", "Status reports refused, by "
                                     "HTTP status", ["status"], registry=self.registry)
        self.cut_downloads = Counter("onie_serve_downloads_cut", "Downloads cut at shutdown",
                                     registry=self.registry)
        self.report_batches = Histogram("onie_serve_report_batch_size", "Status reports "
                                        "decided per database transaction (group commit)",
                                        buckets=BATCH_BUCKETS, registry=self.registry)
        self.report_commits = Histogram("onie_serve_report_commit_seconds", "Seconds one batch "
                                        "of status reports took to decide and commit",
                                        buckets=COMMIT_BUCKETS, registry=self.registry)
        in_flight = Gauge("onie_serve_downloads_in_flight", "Downloads being sent",
                          registry=self.registry)
        in_flight.set_function(lambda: len(self.downloads))
        self.registry.register(_DeviceStates(counts))
        self.downloads: set[Download] = set()
        self._changed: asyncio.Event | None = None

    def committed(self, reports: int, seconds: float) -> None:
        """One batch of ``reports`` status reports decided and committed in ``seconds``
        (called by the report writer's thread; prometheus_client's metrics are thread-safe)."""
        self.report_batches.observe(reports)
        self.report_commits.observe(seconds)

    @contextmanager
    def download(self, request: web.BaseRequest) -> Iterator[Download]:
        """Count a download in flight for the block."""
        entry = Download(request.transport)
        self.downloads.add(entry)
        try:
            yield entry
        finally:
            self.downloads.discard(entry)
            if self._changed is not None:
                self._changed.set()

    async def drain(self, timeout: float, hurry: asyncio.Event | None = None) -> None:
        """Wait until no download is in flight, ``timeout`` seconds at most (or until
        ``hurry`` is set)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._changed = asyncio.Event()
        while self.downloads and loop.time() < deadline and not (hurry and hurry.is_set()):
            self._changed.clear()
            waits = [asyncio.ensure_future(self._changed.wait())]
            if hurry is not None:
                waits.append(asyncio.ensure_future(hurry.wait()))
            _done, pending = await asyncio.wait(waits, timeout=deadline - loop.time(),
                                                return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()

    def cut_all(self) -> int:
        """Cut every download still in flight; returns how many."""
        count = 0
        for entry in list(self.downloads):
            if not entry.cut:
                entry.cut_now()
                count += 1
        self.cut_downloads.inc(count)
        return count

    def count(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """One answered request in the metrics."""
        self.requests.labels(f"{response.status // 100}xx").inc()
        if request.method == "POST" and request.path == "/status" and response.status >= 400:
            self.report_errors.labels(str(response.status)).inc()

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text exposition format."""
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def access_logger(ops: Ops) -> type[AbstractAccessLogger]:
    """aiohttp's access-logger class for an app with ``ops``: counts every request in the
    metrics and writes its line to ``builder.factory.access`` (INFO)."""

    class AccessLog(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            ops.count(request, response)
            if self.logger.isEnabledFor(logging.INFO):
                self.logger.info("%s", access_line(request, response, time))

    return AccessLog
