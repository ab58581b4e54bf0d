"""``onie-builder serve``: the factory's provisioning server over HTTP and HTTPS.

Built on aiohttp (asyncio, keep-alive, TLS through the standard ``ssl`` module, request size
limits, Range parsing): one process holds hundreds of concurrent downloads without threads,
and it is a well-kept library rather than a home-made HTTP stack.

Endpoints (docs/factory.md):
- ``GET /[<dir>/]onie-installer[-<name>][.bin]`` (and ``onie-updater...``): ONIE's waterfall
  names, answered with the installer the site file assigns to the asking device (by its
  ONIE-SERIAL-NUMBER / ONIE-ETH-ADDR headers or a MAC folder), else its platform's; 404 for
  names that should fall through. Range requests resume interrupted downloads.
- ``GET /<path>``: files of ``out/`` (the same tree any static server or object store can serve).
- ``POST /status``: a device's authenticated report (phase, result, log tail).
- ``GET /``: the live status page; ``GET /status.json``: the same for scripts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from builder.errors import BuildError
from builder.factory.site import Site
from builder.factory.sitefile import read_token
from builder.factory.status import (
    AUTH_SCHEME,
    Device,
    Identity,
    ReportError,
    StatusStore,
    check_signature,
    identity_from_headers,
    parse_report,
)
from builder.factory.values import MAC_RE, normalize_mac, parse_platform
from builder.render import BUILTIN_TEMPLATES

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
WATERFALL_RE = re.compile(r"^onie-(?P<kind>installer|updater)(?:-(?P<suffix>[A-Za-z0-9_.-]+?))?"
                          r"(?:\.bin)?$")
STATUS_PAGE = BUILTIN_TEMPLATES / "serve" / "status.html"
SITE_KEY: web.AppKey[Provisioner] = web.AppKey("provisioner")


@dataclass
class Provisioner:
    """The state behind the handlers: the site, the out/ tree, the device store, the token."""

    site: Site
    out_dir: Path
    store: StatusStore
    token: bytes | None

    def choose(self, kind: str, suffix: str | None, who: Identity) -> tuple[Path, str] | None:
        """The file answering waterfall name ``onie-<kind>[-<suffix>]`` for ``who``, or None."""
        device = self.site.find_device(who.serial, who.mac)
        platform = who.platform or (device.platform if device else None)
        if platform is None and suffix is not None and _is_platform(suffix):
            platform = suffix  # a bare request for the full platform name, as a static server
        if platform is None or not _name_fits(suffix, platform):
            return None
        entry = self.site.platform(platform)
        for source in (device, entry):
            path = getattr(source, kind, None) if source is not None else None
            if path is not None:
                return path, f"{kind}: {path.name}"
        return None

    def out_file(self, rel: str) -> Path | None:
        """The regular file ``rel`` inside out/, or None (no escapes, no folders)."""
        root = self.out_dir.resolve()
        try:
            path = (root / rel).resolve()
        except (OSError, RuntimeError):
            return None
        return path if path.is_relative_to(root) and path.is_file() else None


def _is_platform(value: str) -> bool:
    try:
        parse_platform(value)
    except ValueError:
        return False
    return True


def _name_fits(suffix: str | None, platform: str) -> bool:
    """True when ``onie-installer-<suffix>`` is one of the names ``platform``'s waterfall asks."""
    if suffix is None:
        return True
    arch, machine, _rev = parse_platform(platform)
    if suffix in (platform, f"{arch}-{machine}", machine, arch):
        return True
    # <arch>-<switch_asic>: the ASIC is not in ONIE's headers; a device asks only its own.
    asic = suffix.removeprefix(f"{arch}-")
    return asic != suffix and re.fullmatch(r"[a-z0-9]+", asic) is not None


def make_app(provisioner: Provisioner) -> web.Application:
    """The aiohttp application with every route."""
    max_body = provisioner.site.status.max_body if provisioner.site.status else 64 * 1024
    app = web.Application(client_max_size=max_body)
    app[SITE_KEY] = provisioner
    app.router.add_get("/", status_page)
    app.router.add_get("/status.json", status_json)
    app.router.add_post("/status", post_status)
    app.router.add_get("/onie-ca.pem", ca_file)
    app.router.add_get("/{path:.*}", get_file)
    return app


async def status_page(request: web.Request) -> web.StreamResponse:
    """The live status page (plain HTML + script, no external assets)."""
    return web.FileResponse(STATUS_PAGE, headers={"Content-Type": "text/html; charset=utf-8",
                                                  "Cache-Control": "no-store"})


async def status_json(request: web.Request) -> web.Response:
    """Every device's state, for the page and for scripts."""
    provisioner = request.app[SITE_KEY]
    data = provisioner.store.snapshot()
    data["site"] = provisioner.site.name
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def ca_file(request: web.Request) -> web.StreamResponse:
    """The CA the images trust, when the site names one."""
    tls = request.app[SITE_KEY].site.tls
    if tls is None or tls.ca is None:
        raise web.HTTPNotFound()
    return web.FileResponse(tls.ca, headers={"Content-Type": "application/x-pem-file"})


async def post_status(request: web.Request) -> web.Response:
    """A device's report: 401 without a valid HMAC, 413 when too large, 400 when malformed."""
    provisioner = request.app[SITE_KEY]
    if provisioner.token is None:
        raise web.HTTPForbidden(text="status reports are disabled: the site has no status token\n")
    body = await request.read()  # aiohttp answers 413 past client_max_size
    if not check_signature(provisioner.token, body, request.headers.get("Authorization")):
        raise web.HTTPUnauthorized(text="missing or bad HMAC\n",
                                   headers={"WWW-Authenticate": AUTH_SCHEME})
    try:
        report = parse_report(body)
    except ReportError as exc:
        raise web.HTTPBadRequest(text=f"bad status report: {exc}\n") from None
    headers = identity_from_headers(request.headers, request.remote)
    fields = report.fields
    who = Identity(fields.get("serial") or headers.serial, fields.get("mac") or headers.mac,
                   fields.get("platform") or headers.platform, request.remote)
    device = _device(provisioner, who)
    provisioner.store.report(device, report)
    log.info("status: %s %s %s", device.key, report.phase, report.result)
    return web.json_response({"device": device.key, "phase": device.phase, "result": device.result})


def _device(provisioner: Provisioner, who: Identity) -> Device:
    entry = provisioner.site.find_device(who.serial, who.mac)
    return provisioner.store.find(who, entry.name if entry else None)


async def get_file(request: web.Request) -> web.StreamResponse:
    """A waterfall name (per-device installer) or a file of out/."""
    provisioner = request.app[SITE_KEY]
    rel = request.match_info["path"]
    parts = [p for p in rel.split("/") if p]
    mac_hint = next((normalize_mac(p) for p in parts[:-1] if MAC_RE.match(p)), None)
    who = identity_from_headers(request.headers, request.remote, mac_hint)
    device = _device(provisioner, who)
    provisioner.store.note_request(device, "/" + rel)
    match = WATERFALL_RE.match(parts[-1]) if parts else None
    if match is not None:
        chosen = provisioner.choose(match["kind"], match["suffix"], who)
        if chosen is not None:
            return await send_file(request, chosen[0], device, provisioner.store)
    path = provisioner.out_file(rel) if parts else None
    if path is None:
        raise web.HTTPNotFound()
    tracked = device if match is not None else None
    return await send_file(request, path, tracked, provisioner.store)


async def send_file(request: web.Request, path: Path, device: Device | None,
                    store: StatusStore) -> web.StreamResponse:
    """Send ``path`` with single-range support (206/416), counting the bytes for ``device``."""
    try:
        stat = path.stat()
    except OSError:
        raise web.HTTPNotFound() from None
    size = stat.st_size
    etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Type": "application/octet-stream"}
    span = _range(request, size, etag)
    if span is None:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}",
                                                          **headers})
    start, end, partial = span
    response = web.StreamResponse(status=206 if partial else 200, headers=headers)
    if partial:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response.content_length = end - start
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    if device is not None:
        store.start_download(device, path.name, size, start)
    sent = 0
    done = False
    loop = asyncio.get_running_loop()
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            while sent < end - start:
                chunk = await loop.run_in_executor(None, handle.read, min(CHUNK, end - start - sent))
                if not chunk:
                    break
                # Counted when handed to the connection: a write waits for the client to take
                # what is queued, so a client that vanishes during the first chunk would
                # otherwise count nothing although it received part of it.
                sent += len(chunk)
                if device is not None:
                    store.add_bytes(device, len(chunk))
                await response.write(chunk)
        await response.write_eof()
        done = sent == end - start
    except ConnectionError:  # reset, broken pipe, or aiohttp's "Connection lost"
        log.info("%s: client went away, %d of %d bytes handed over", request.path, sent, end - start)
    finally:
        if device is not None:
            store.finish_download(device, complete=done and end == size)
    return response


def _range(request: web.Request, size: int, etag: str) -> tuple[int, int, bool] | None:
    """The byte span to send, [start, end), and whether it answers a Range (206); None when the
    range cannot be satisfied (416).

    A malformed or multi-range header is ignored (RFC 9110 14.2: the whole file is sent);
    an If-Range that names another version of the file also sends it whole."""
    whole = (0, size, False)
    if "Range" not in request.headers:
        return whole
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        return whole
    try:
        span = request.http_range
    except ValueError:
        return whole
    start, stop = span.start, span.stop
    if start is None and stop is None:
        return whole
    if start is not None and start < 0:  # suffix range: the last N bytes
        return (max(0, size + start), size, True) if size else None
    start = start or 0
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        return None
    return start, stop, True


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
                 record: Path | None = None) -> None:
        status = site.status
        self.store = StatusStore(status.log_tail if status else 16 * 1024, record)
        self.provisioner = Provisioner(site, out_dir, self.store, read_token(site))
        self.listen = listen or [str(a) for a in site.server.listen]
        self.http_port = site.server.http_port if http_port is None else http_port
        self.https_port = site.server.https_port if https_port is None else https_port
        self.tls = make_tls_context(site)
        self.listeners: list[Listener] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> list[str]:
        """Bind every listener and start serving; return their URLs."""
        self.listeners = bind(self.listen, self.http_port, False)
        if self.tls is not None and self.https_port is not None:
            self.listeners += bind(self.listen, self.https_port, True)
        self._runner = web.AppRunner(make_app(self.provisioner), access_log=None,
                                     handle_signals=False)
        await self._runner.setup()
        for listener in self.listeners:
            site = web.SockSite(self._runner, listener.sock,
                                ssl_context=self.tls if listener.tls else None)
            await site.start()
        return [listener.url for listener in self.listeners]

    async def stop(self) -> None:
        """Stop serving and close the sockets."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def run_server(server: Server, ready: Callable[[list[str]], Any]) -> None:
    """Serve until SIGINT or SIGTERM (the CLI's loop); ``ready`` gets the URLs once bound."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        urls = await server.start()
        ready(urls)
        try:
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(main())
