"""The running ``serve``: listening sockets (HTTP and HTTPS), each connection guarded by
``builder.factory.limits``, the aiohttp application of ``builder.factory.serve`` behind them,
the access log of ``builder.factory.ops``, and the CLI's loop until SIGINT or SIGTERM, which
stops gracefully: no new connections, downloads in flight get a grace period, then the rest
are cut and the store is closed."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from builder.errors import BuildError
from builder.factory.limits import (
    Guard,
    Limits,
    RateLimit,
    Tracker,
    install_log_limits,
    remove_log_limits,
)
from builder.factory.ops import ACCESS, access_logger
from builder.factory.registry import DbRegistry
from builder.factory.serve import Provisioner, make_app
from builder.factory.site import Site
from builder.factory.status import StatusStore

log = logging.getLogger(__name__)
# Seconds for the handlers of cut downloads and other requests to end after the grace.
SETTLE = 5.0


@dataclass
class Listener:
    """One bound socket: its URL and whether it speaks TLS."""

    sock: socket.socket
    url: str
    tls: bool


def make_tls_context(site: Site) -> ssl.SSLContext | None:
    """The server-side TLS context from the site's certificate chain and key."""
    if site.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(site.tls.cert, site.tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise BuildError(f"site {site.name!r}: cannot load tls.cert/tls.key: {exc}") from None
    return context


def bind(addresses: list[str], port: int, tls: bool) -> list[Listener]:
    """Bind a listening socket per address (port 0: any free port); raise BuildError when taken."""
    out = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            raise BuildError(f"cannot listen on {address} port {port}: {exc.strerror}") from None
        sock.listen(1024)
        sock.setblocking(False)
        host = f"[{address}]" if family == socket.AF_INET6 else address
        scheme = "https" if tls else "http"
        out.append(Listener(sock, f"{scheme}://{host}:{sock.getsockname()[1]}", tls))
    return out


class Server:
    """A running provisioning server: ``start`` binds and serves, ``stop`` closes."""

    def __init__(self, site: Site, out_dir: Path, *, listen: list[str] | None = None,
                 http_port: int | None = None, https_port: int | None = None,
                 database: str, limits: Limits | None = None) -> None:
        self.store = StatusStore.open(database, site)
        self.limits = limits or Limits()
        self.registry = DbRegistry(self.store.db)
        self.provisioner = Provisioner(site, out_dir, self.store, self.registry, self.limits)
        self.listen = listen or [str(a) for a in site.server.listen]
        self.http_port = site.server.http_port if http_port is None else http_port
        self.https_port = site.server.https_port if https_port is None else https_port
        self.tls = make_tls_context(site)
        self.listeners: list[Listener] = []
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.Server] = []
        self._limiter: RateLimit | None = None
        self.tracker = Tracker(self.limits)

    async def start(self) -> list[str]:
        """Bind every listener and start serving; return their URLs."""
        self.listeners = bind(self.listen, self.http_port, False)
        if self.tls is not None and self.https_port is not None:
            self.listeners += bind(self.listen, self.https_port, True)
        self._limiter = install_log_limits(self.limits)
        # keepalive_timeout bounds the wait for every request after the first on a connection
        # (Guard bounds the first); aiohttp closes an idle keep-alive connection after it.
        self._runner = web.AppRunner(make_app(self.provisioner), access_log=ACCESS,
                                     access_log_class=access_logger(self.provisioner.ops),
                                     handle_signals=False, shutdown_timeout=SETTLE,
                                     keepalive_timeout=self.limits.idle_timeout)
        await self._runner.setup()
        handlers = self._runner.server
        assert handlers is not None
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            tls: dict[str, Any] = ({"ssl": self.tls, "ssl_handshake_timeout": self.limits.header_timeout}
                                   if listener.tls else {})
            self._servers.append(await loop.create_server(
                lambda: Guard(handlers(), self.tracker), sock=listener.sock, backlog=1024, **tls))
        return [listener.url for listener in self.listeners]

    async def stop(self, grace: float = 0.0, hurry: asyncio.Event | None = None) -> None:
        """Stop: refuse new connections at once, let downloads in flight go on for ``grace``
        seconds (or until ``hurry`` is set), cut the rest (their clients get a short body),
        close every connection and then the store."""
        for server in self._servers:
            server.close()  # the listening sockets: a new connection is refused from here on
        self._servers = []
        ops = self.provisioner.ops
        if self._runner is not None and self._runner.server is not None:
            self._runner.server.pre_shutdown()  # keep-alive ends after each current request
        waiting = len(ops.downloads)
        if grace > 0 and waiting:
            log.info("stopping: no new connections; %d download(s) in flight get up to %g s",
                     waiting, grace)
            await ops.drain(grace, hurry)
        else:
            log.info("stopping: no new connections; %d download(s) in flight", waiting)
        cut = ops.cut_all()
        if cut:
            await ops.drain(SETTLE)
        level = logging.WARNING if cut else logging.INFO
        log.log(level, "stopped: %d download(s) finished, %d cut", waiting - cut, cut)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.provisioner.reports.close()  # reports in flight decided and committed
        self.store.close()  # the state database's queued events written, connections released
        if self._limiter is not None:
            remove_log_limits(self._limiter)
            self._limiter = None

    def close(self) -> None:
        """Write what is queued and release the database (after ``stop``)."""
        self.provisioner.reports.close()
        self.store.close()


def run_server(server: Server, ready: Callable[[list[str]], Any], grace: float = 0.0) -> None:
    """Serve until SIGINT or SIGTERM (the CLI's loop); ``ready`` gets the URLs once bound.
    Then stop with ``grace`` seconds for downloads in flight; a second signal cuts them now."""

    async def main() -> None:
        stop = asyncio.Event()
        hurry = asyncio.Event()
        loop = asyncio.get_running_loop()

        def signalled(signum: signal.Signals) -> None:
            if stop.is_set():
                log.warning("%s again: cutting the downloads in flight now", signum.name)
                hurry.set()
            else:
                log.info("%s: stopping", signum.name)
                stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, signalled, signum)
        urls = await server.start()
        ready(urls)
        try:
            await stop.wait()
        finally:
            await server.stop(grace, hurry)

    try:
        asyncio.run(main())
    finally:
        server.close()
