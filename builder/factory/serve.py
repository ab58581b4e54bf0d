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
- ``POST /status``: a device's report signed with its own key (``builder.factory.reports``).
- ``GET /``: the live status page; ``GET /status.json``: the same for scripts, paginated;
  ``GET /status/<key>.json``: one device and its history.

Only waterfall requests by devices the site lists make device records; everything else is
counted. Bad input gets a fixed answer, never a traceback (``shield``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from builder.factory.limits import Limits
from builder.factory.ops import DEVICE, SENT, Ops, state_counts
from builder.factory.registry import KeyRegistry
from builder.factory.reports import AUTH_SCHEME, ReportWriter
from builder.factory.site import Site
from builder.factory.status import MAX_PAGE, PAGE, Device, Identity, StatusStore, identity_from_headers
from builder.factory.transfer import send_span
from builder.factory.values import MAC_RE, normalize_mac, parse_platform
from builder.render import BUILTIN_TEMPLATES

log = logging.getLogger(__name__)

MAX_PATH = 1024  # characters of a request path; longer ones get 414
WATERFALL_RE = re.compile(r"^onie-(?P<kind>installer|updater)(?:-(?P<suffix>[A-Za-z0-9_.-]+?))?"
                          r"(?:\.bin)?$")
STATUS_PAGE = BUILTIN_TEMPLATES / "serve" / "status.html"
SITE_KEY: web.AppKey[Provisioner] = web.AppKey("provisioner")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Provisioner:
    """The state behind the handlers: the site, the out/ tree, the device store, the key
    registry, the bounds and the writer thread of devices' reports (group commit)."""

    site: Site
    out_dir: Path
    store: StatusStore
    registry: KeyRegistry
    limits: Limits = field(default_factory=Limits)
    ops: Ops = field(init=False)
    reports: ReportWriter = field(init=False)

    def __post_init__(self) -> None:
        self.ops = Ops(lambda: state_counts(self.store))
        self.reports = ReportWriter(self.store, self.registry, self.site,
                                    committed=self.ops.committed)

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
        """The regular file ``rel`` inside out/, or None (no escapes, no folders, no names the
        file system refuses)."""
        root = self.out_dir.resolve()
        try:
            path = (root / rel).resolve()
            return path if path.is_relative_to(root) and path.is_file() else None
        except (OSError, ValueError, RuntimeError):
            return None


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
    app = web.Application(client_max_size=max_body, middlewares=[shield])
    app[SITE_KEY] = provisioner
    app.router.add_get("/", status_page)
    app.router.add_get("/status.json", status_json)
    app.router.add_get("/status/{key}.json", device_json)
    app.router.add_post("/status", post_status)
    app.router.add_get("/onie-ca.pem", ca_file)
    app.router.add_get("/metrics", provisioner.ops.metrics)
    app.router.add_get("/{path:.*}", get_file)
    return app


@web.middleware
async def shield(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No traceback reaches a client or the log: an unexpected error is one rate-limited line
    and a 500 without details."""
    try:
        return await handler(request)
    except (web.HTTPException, asyncio.CancelledError):
        raise
    except Exception as exc:  # the boundary between the server and a client
        log.error("%s %s: %s: %s", request.method, ascii(request.path[:120]), type(exc).__name__,
                  ascii(str(exc)[:200]))
        raise web.HTTPInternalServerError(text="internal error\n") from None


async def status_page(request: web.Request) -> web.StreamResponse:
    """The live status page (plain HTML + script, no external assets)."""
    return web.FileResponse(STATUS_PAGE, headers={"Content-Type": "text/html; charset=utf-8",
                                                  "Cache-Control": "no-store"})


def _query_int(request: web.Request, name: str, default: int, top: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= 9) or int(value) > top:
        raise web.HTTPBadRequest(text=f"{name}: expected a whole number from 0 to {top}\n")
    return int(value)


async def status_json(request: web.Request) -> web.Response:
    """One page of devices (``?offset=N&limit=M``) and the counts over all of them."""
    provisioner = request.app[SITE_KEY]
    offset = _query_int(request, "offset", 0, 10**9)
    limit = _query_int(request, "limit", PAGE, MAX_PAGE)
    loop = asyncio.get_running_loop()  # the database is read off the event loop
    data = await loop.run_in_executor(None, provisioner.store.snapshot, offset, limit)
    data["site"] = provisioner.site.name
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def device_json(request: web.Request) -> web.Response:
    """One device (serial number, else MAC) and its last events, oldest first; 404 unknown."""
    store = request.app[SITE_KEY].store
    key = request.match_info["key"]
    if len(key) > 64 or _bad_path(key):
        raise web.HTTPNotFound(text="no such device\n")
    data = await asyncio.get_running_loop().run_in_executor(None, store.history, key)
    if data is None:
        raise web.HTTPNotFound(text="no such device\n")
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def ca_file(request: web.Request) -> web.StreamResponse:
    """The CA the images trust, when the site names one."""
    tls = request.app[SITE_KEY].site.tls
    if tls is None or tls.ca is None:
        raise web.HTTPNotFound()
    return web.FileResponse(tls.ca, headers={"Content-Type": "application/x-pem-file"})


async def post_status(request: web.Request) -> web.Response:
    """A device's signed report: 200 when applied; 400 malformed, 401 bad signature, 408 body
    too slow, 409 replay or key conflict, 413 too large, 503 device table full."""
    provisioner = request.app[SITE_KEY]
    if provisioner.site.status is None:
        raise web.HTTPForbidden(text="status reports are disabled: the site has no 'status' section\n")
    max_body = provisioner.site.status.max_body
    if (request.content_length or 0) > max_body:  # refused before waiting for the body
        raise web.HTTPRequestEntityTooLarge(max_body, request.content_length or 0)
    try:
        async with asyncio.timeout(provisioner.limits.body_timeout):
            body = await request.read()  # aiohttp answers 413 past client_max_size
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the report's body did not arrive in time\n") from None
    # Committed to the database before the answer, with the reports that arrived meanwhile
    # (group commit), by the writer thread: the event loop keeps serving.
    outcome = await asyncio.wrap_future(provisioner.reports.submit(
        body, request.headers.get("Authorization"), request.remote))
    device = outcome.device
    if device is None:
        log.info("status refused (%d): %s", outcome.status, outcome.text)
        headers = {"WWW-Authenticate": AUTH_SCHEME} if outcome.status == 401 else None
        return web.Response(status=outcome.status, text=outcome.text + "\n", headers=headers)
    request[DEVICE] = device.key
    log.info("status: %s %s %s", device.key, device.phase, device.result)
    return web.json_response({"device": device.key, "phase": device.phase, "result": device.result})


def _bad_path(rel: str) -> bool:
    return len(rel) > MAX_PATH or any(ord(c) < 32 or ord(c) == 127 for c in rel)


async def get_file(request: web.Request) -> web.StreamResponse:
    """A waterfall name (per-device installer) or a file of out/."""
    provisioner = request.app[SITE_KEY]
    rel = request.match_info["path"]
    if len(rel) > MAX_PATH:
        raise web.HTTPRequestURITooLong(text="path too long\n")
    if _bad_path(rel):
        raise web.HTTPBadRequest(text="control characters in the path\n")
    parts = [p for p in rel.split("/") if p]
    mac_hint = next((normalize_mac(p) for p in parts[:-1] if MAC_RE.match(p)), None)
    who = identity_from_headers(request.headers, request.remote, mac_hint)
    if who.key is not None:
        request[DEVICE] = who.key
    match = WATERFALL_RE.match(parts[-1]) if parts else None
    device = tracked_device(provisioner, who, waterfall=match is not None)
    provisioner.store.note_request(device, "/" + rel)
    if match is not None:
        chosen = provisioner.choose(match["kind"], match["suffix"], who)
        if chosen is not None:
            if not chosen[0].is_file():  # assigned, but gone since serve started
                provisioner.store.not_found(device, chosen[0].name, "/" + rel)
                raise web.HTTPNotFound()
            return await send_file(request, chosen[0], device, provisioner, tracked=True)
    path = provisioner.out_file(rel) if parts else None
    if path is None:
        raise web.HTTPNotFound()
    return await send_file(request, path, device, provisioner, tracked=match is not None)


def tracked_device(provisioner: Provisioner, who: Identity, *, waterfall: bool) -> Device | None:
    """The record of a device the site lists (created by its waterfall requests only); None
    for everyone else: made-up headers are counted, never stored one by one."""
    entry = provisioner.site.find_device(who.serial, who.mac)
    if entry is None:
        return None
    store = provisioner.store
    return store.find(who, entry.name, listed=True) if waterfall else store.lookup(who)


async def send_file(request: web.Request, path: Path, device: Device | None,
                    provisioner: Provisioner, *, tracked: bool) -> web.StreamResponse:
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
    store = provisioner.store
    device = device if tracked else None
    if device is not None:
        store.start_download(device, path.name, size, start)
    ops = provisioner.ops
    sent = 0
    request[SENT] = 0

    def took(count: int) -> None:
        nonlocal sent
        sent += count
        request[SENT] = sent
        ops.bytes_served.inc(count)
        if device is not None:
            store.add_bytes(device, count)

    done = False
    with ops.download(request) as download:
        try:
            with path.open("rb", buffering=0) as handle:
                # A client that stops reading would hold the connection, the file and the
                # buffers for ever: each piece must be taken within send_timeout.
                await send_span(request, response, handle, start, end,
                                provisioner.limits.send_timeout, took)
            if sent == end - start:
                await response.write_eof()
                done = True
        except ConnectionError:  # reset, broken pipe, aiohttp's "Connection lost", shutdown's cut
            why = "cut at shutdown" if download.cut else "client went away"
            log.info("%s: %s, %d of %d bytes handed over", ascii(path.name), why, sent, end - start)
        except TimeoutError:
            log.info("%s: client stalled, %d of %d bytes handed over", ascii(path.name), sent,
                     end - start)
            if request.transport is not None:
                request.transport.abort()
        finally:
            if tracked:
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
