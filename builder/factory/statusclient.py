"""The client of ``onie-builder status URL``: fetches a server's ``/status.json`` expecting
anything (a size bound, JSON of any shape, text with terminal escapes) and prints it as a
table of plain text, or says in one line what was wrong with the answer."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builder.errors import BuildError

MAX_ANSWER = 64 << 20  # 10,000 devices with their log tails fit many times over
MAX_CELL = 64  # characters of one table cell; longer values are cut with '...'
# What a terminal would act on: C0 (escape sequences start with ESC), DEL, C1 (CSI is 0x9b),
# and the bidirectional overrides that reorder what is shown (CVE-2021-42574).
UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
COLUMNS = ("DEVICE", "PLATFORM", "ADDRESS", "STATE", "PHASE", "RESULT", "SENT")


class MalformedAnswer(BuildError):
    """A status answer that is not what ``serve`` sends; the message names the part."""


MAX_PAGES = 100  # of serve's largest page (10,000 devices): a million devices at most


def fetch_status(url: str, cacert: Path | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Every page of ``<url>/status.json`` (serve pages it: ``offset``, ``limit``, ``total``),
    joined: an object with a ``devices`` list; raise BuildError in one line when the server is
    unreachable or an answer is malformed."""
    data = fetch_page(url, 0, cacert, timeout)
    devices: list[Any] = data["devices"]
    total = data.get("total")
    pages = 1
    while isinstance(total, int) and len(devices) < total and pages < MAX_PAGES:
        page = fetch_page(url, len(devices), cacert, timeout)
        if not page["devices"]:
            break  # the table shrank meanwhile
        devices.extend(page["devices"])
        pages += 1
    return data


def fetch_page(url: str, offset: int, cacert: Path | None, timeout: float) -> dict[str, Any]:
    """One ``GET <url>/status.json?offset=N&limit=10000``, checked."""
    import requests

    target = url.rstrip("/") + "/status.json"
    params = {"offset": str(offset), "limit": "10000"} if offset else {"limit": "10000"}
    try:
        with requests.get(target, params=params, timeout=timeout, stream=True,
                          verify=str(cacert) if cacert is not None else True) as response:
            response.raise_for_status()
            body = _read_capped(response.iter_content(1 << 16), target)
    except requests.RequestException as exc:
        raise BuildError(f"cannot reach {target}: {clean(str(exc), 200)}") from None
    return parse_status(body, target)


def _read_capped(chunks: Any, target: str) -> bytes:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > MAX_ANSWER:
            raise MalformedAnswer(f"{target}: malformed answer: larger than "
                                  f"{MAX_ANSWER >> 20} MiB")
    return bytes(data)


def parse_status(body: bytes, target: str) -> dict[str, Any]:
    """The answer as a dict holding a ``devices`` list of objects; MalformedAnswer otherwise."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise MalformedAnswer(f"{target}: malformed answer: not JSON ({clean(exc, 80)})") from None
    except RecursionError:  # '[' nested 100,000 deep
        raise MalformedAnswer(f"{target}: malformed answer: not JSON (nested too deeply)") \
            from None
    if not isinstance(data, dict):
        raise MalformedAnswer(f"{target}: malformed answer: expected a JSON object, got "
                              f"{type(data).__name__}")
    devices = data.get("devices", [])
    if not isinstance(devices, list):
        raise MalformedAnswer(f"{target}: malformed answer: devices: expected a list, got "
                              f"{type(devices).__name__}")
    for i, device in enumerate(devices):
        if not isinstance(device, dict):
            raise MalformedAnswer(f"{target}: malformed answer: devices[{i}]: expected an "
                                  f"object, got {type(device).__name__}")
    if not isinstance(data.get("counts", {}), dict):
        raise MalformedAnswer(f"{target}: malformed answer: counts: expected an object")
    return data


def clean(value: object, limit: int = MAX_CELL) -> str:
    """``value`` as text a terminal shows as it is: each control character written as
    ``\\x1b`` (so nothing is hidden), cut to ``limit`` characters."""
    text = UNSAFE_RE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                         else f"\\u{ord(m.group()):04x}", str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_status(data: Mapping[str, Any]) -> str:
    """A plain table of the devices, one line each, then the counts; every cell cleaned."""
    rows = [COLUMNS]
    for d in data.get("devices", []):
        rows.append((clean(d.get("name") or d.get("key") or "?"), clean(d.get("platform") or "-"),
                     clean(d.get("address") or "-"), clean(d.get("state", "?")),
                     clean(d.get("phase", "?")), clean(d.get("result", "?")), _sent(d)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    counts = ", ".join(f"{clean(k)}: {clean(v)}" for k, v in sorted(data.get("counts", {}).items()))
    return "\n".join([*lines, f"{len(rows) - 1} devices" + (f" ({counts})" if counts else "")])


def _sent(device: Mapping[str, Any]) -> str:
    """Percent of the installer sent; '-' when the sizes are missing or not numbers."""
    size, sent = device.get("size"), device.get("bytes_sent", 0)
    if not isinstance(size, int) or not isinstance(sent, int) or size <= 0 or sent < 0:
        return "-"
    return f"{min(100, 100 * sent // size)}%"
