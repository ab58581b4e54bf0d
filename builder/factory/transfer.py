"""The body of a download: ``loop.sendfile`` on plain HTTP (the kernel copies from the page
cache to the socket, no bytes through Python), chunks written through the connection on TLS.

Both send a span in pieces and call ``took(n)`` for each piece handed over, so the caller's
per-device byte count and metrics move while the download runs; each piece must be taken
within ``timeout`` seconds (a stalled client, ``TimeoutError``). A client that goes away
raises ``ConnectionError`` after ``took`` was told what the kernel accepted before it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import BinaryIO

from aiohttp import web

CHUNK = 256 * 1024  # bytes per write on the chunked (TLS) path
# Bytes per sendfile call: a client must take this much within the send timeout (60 s:
# 17 kB/s), and each call costs a few loop round trips, so a few MiB keeps that small.
SLICE = 4 * 1024 * 1024


def plain_tcp(request: web.BaseRequest) -> bool:
    """True when the request came over plain TCP (sendfile can send to its socket)."""
    transport = request.transport
    return transport is not None and transport.get_extra_info("sslcontext") is None


async def send_span(request: web.BaseRequest, response: web.StreamResponse, handle: BinaryIO,
                    start: int, end: int, timeout: float, took: Callable[[int], None]) -> None:
    """Send bytes [start, end) of the open file ``handle`` as ``response``'s body."""
    offset = start
    if plain_tcp(request):
        offset = await _sendfile(request, handle, start, end, timeout, took)
    if offset < end:
        await _chunks(response, handle, offset, end, timeout, took)


async def _sendfile(request: web.BaseRequest, handle: BinaryIO, start: int, end: int,
                    timeout: float, took: Callable[[int], None]) -> int:
    """Send with the kernel's sendfile; returns where it stopped (``end``, or earlier when
    sendfile is not available here and the chunked path must go on)."""
    loop = asyncio.get_running_loop()
    offset = start
    while offset < end:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection lost")
        handle.seek(offset)
        try:
            async with asyncio.timeout(timeout):
                sent = await loop.sendfile(transport, handle, offset, min(SLICE, end - offset),
                                           fallback=False)
        except asyncio.exceptions.SendfileNotAvailableError:
            # The kernel refused the first piece (the call moves nothing): the chunked path
            # goes on from here and meets the same error a plain write would.
            return offset
        except (ConnectionError, TimeoutError):
            # After a partial send asyncio leaves the file at offset + bytes the kernel took.
            moved = os.lseek(handle.fileno(), 0, os.SEEK_CUR) - offset
            if moved > 0:
                took(moved)
            raise
        except RuntimeError as exc:  # the transport closed under it
            raise ConnectionResetError(str(exc)) from None
        if sent <= 0:
            raise ConnectionResetError("sendfile sent nothing")
        took(sent)
        offset += sent
    return offset


async def _chunks(response: web.StreamResponse, handle: BinaryIO, start: int, end: int,
                  timeout: float, took: Callable[[int], None]) -> None:
    """Read and write CHUNK bytes at a time (TLS, or where sendfile is not available)."""
    loop = asyncio.get_running_loop()
    handle.seek(start)
    sent = start
    while sent < end:
        chunk = await loop.run_in_executor(None, handle.read, min(CHUNK, end - sent))
        if not chunk:  # the file shrank while being sent: the caller sees a short count
            return
        # Counted when handed to the connection: a write waits for the client to take what is
        # queued, so a client that vanishes during the first chunk would otherwise count
        # nothing although it received part of it.
        sent += len(chunk)
        took(len(chunk))
        async with asyncio.timeout(timeout):
            await response.write(chunk)
