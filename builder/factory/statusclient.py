"""The client of ``onie-builder status URL``: fetches a server's ``/status.json`` expecting
anything (a size bound, JSON of any shape, text with terminal escapes), orders and filters the
devices as the status page does (failures first), and prints them as a table of plain text, or
says in one line what was wrong with the server or its answer."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from builder.errors import BuildError

MAX_ANSWER = 64 << 20  # 10,000 devices with their log tails fit many times over
MAX_CELL = 64  # characters of one table cell; longer values are cut with '...'
MAX_REASON = 120  # the last column may be longer: it is what the operator acts on
# What a terminal would act on: C0 (escape sequences start with ESC), DEL, C1 (CSI is 0x9b),
# and the bidirectional overrides that reorder what is shown (CVE-2021-42574).
UNSAFE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
COLUMNS = ("DEVICE", "NAME", "PLATFORM", "ADDRESS", "STATE", "PROGRESS", "LAST SEEN", "REASON")
# Failures first, then what is under way, then what needs nothing. The status page
# (templates/serve/status.html, ORDER) sorts the same way; tests/test_statusclient.py checks.
STATES = ("failed", "conflict", "silent", "downloading", "installing", "discovering", "waiting",
          "installed")
RANK = {state: n for n, state in enumerate(STATES)}
# The fields the filter box and --filter search, as the page does.
SEARCHED = ("name", "key", "serial", "mac", "platform", "address", "state", "reason")
MAC_SEPARATORS_RE = re.compile("[:.-]")
# (below this age in seconds, unit size, unit) of LAST SEEN; the page's ago() is the same.
AGES = ((60, 1, "s"), (2 * 3600, 60, "min"), (2 * 86400, 3600, "h"))


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
    deadline = time.monotonic() + timeout
    try:
        with requests.get(target, params=params, timeout=timeout, stream=True,
                          verify=str(cacert) if cacert is not None else True) as response:
            if response.status_code != 200:
                raise BuildError(f"{clean(target, 200)} answered HTTP {response.status_code} "
                                 f"{clean(response.reason or '', 60)}".rstrip(),
                                 hint=_hint(response.status_code))
            body = _read_capped(response.iter_content(1 << 16), target, deadline, timeout)
            kind = response.headers.get("Content-Type", "")
    except requests.RequestException as exc:
        raise BuildError(f"cannot reach {clean(target, 200)}: {describe(exc, timeout)}") from None
    return parse_status(body, target, kind)


def _hint(status: int) -> str | None:
    if status == 404:
        return "is URL an `onie-builder serve` instance? Its status is at URL/status.json"
    return "see the server's log" if status >= 500 else None


def describe(exc: BaseException, timeout: float) -> str:
    """What went wrong with a request, in a few words: the root cause, not the library's
    wrapper objects (``connection refused``, ``no answer within 10 s``)."""
    import requests

    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, requests.exceptions.InvalidSchema | requests.exceptions.MissingSchema |
                  requests.exceptions.InvalidURL):
        return "not an http:// or https:// URL"
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, TimeoutError):
            return f"no answer within {timeout:g} s"
        if type(cause).__name__ == "gaierror":
            return f"host name not found ({clean(getattr(cause, 'strerror', '') or cause, 80)})"
        if type(cause).__name__ == "SSLCertVerificationError":
            return f"TLS certificate not trusted ({clean(getattr(cause, 'verify_message', cause), 80)})"
        if isinstance(cause, OSError) and cause.strerror:
            return clean(cause.strerror.lower(), 80)
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ConnectionError):
        return "connection closed before the answer was complete"
    return clean(type(exc).__name__, 80)


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and everything it wraps (``__cause__``, urllib3's ``reason``, exception args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [c for c in (current.__cause__, current.__context__, getattr(current, "reason", None),
                             *current.args) if isinstance(c, BaseException)]


def _read_capped(chunks: Any, target: str, deadline: float, timeout: float) -> bytes:
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > MAX_ANSWER:
            raise MalformedAnswer(f"{target}: malformed answer: larger than "
                                  f"{MAX_ANSWER >> 20} MiB")
        if time.monotonic() > deadline:  # a server trickling bytes beats the read timeout
            raise BuildError(f"cannot reach {clean(target, 200)}: the answer took longer than "
                             f"{timeout:g} s")
    return bytes(data)


def parse_status(body: bytes, target: str, kind: str = "") -> dict[str, Any]:
    """The answer as a dict holding a ``devices`` list of objects; MalformedAnswer otherwise."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        what = f"{clean(kind, 40)}, " if kind and "json" not in kind else ""
        raise MalformedAnswer(f"{target}: malformed answer: not JSON ({what}{clean(exc, 80)})") \
            from None
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


def _text(value: object) -> str:
    return "" if value is None else str(value)


def sort_key(device: Mapping[str, Any]) -> tuple[int, str, str]:
    """Failures first (``STATES``), then by name, else key; unknown states last."""
    rank = RANK.get(_text(device.get("state")), len(STATES))
    return rank, _text(device.get("name") or device.get("key")), _text(device.get("key"))


def matches(device: Mapping[str, Any], text: str) -> bool:
    """Whether every word of ``text`` occurs, ignoring case, in one of the device's
    ``SEARCHED`` fields (a MAC also without its separators)."""
    values = [_text(device.get(f)) for f in SEARCHED]
    values.append(MAC_SEPARATORS_RE.sub("", _text(device.get("mac"))))
    haystack = "\n".join(values).lower()
    return all(word in haystack for word in text.lower().split())


def select(devices: Iterable[Mapping[str, Any]], state: str | None = None,
           text: str | None = None) -> list[Mapping[str, Any]]:
    """The devices in ``state`` (all when None) matching ``text``, in the page's order."""
    chosen = [d for d in devices if (state is None or d.get("state") == state)
              and (not text or matches(d, text))]
    return sorted(chosen, key=sort_key)


def ago(seconds: object, now: float) -> str:
    """``12 s ago``, ``17 min ago``, ``5 h ago``, ``3 d ago``; ``never`` for None."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "never"
    age = max(0, round(now - seconds))
    for below, size, unit in AGES:
        if age < below:
            return f"{age // size} {unit} ago"
    return f"{age // 86400} d ago"


def progress(device: Mapping[str, Any]) -> str:
    """``42%`` while a percent is known, else ``-``."""
    percent = device.get("percent")
    if isinstance(percent, int) and not isinstance(percent, bool) and 0 <= percent <= 100:
        return f"{percent}%"
    return "-"


def format_status(data: Mapping[str, Any], devices: Iterable[Mapping[str, Any]] | None = None,
                  now: float | None = None) -> str:
    """A plain table of ``devices`` (default: all of ``data``, in the page's order), one line
    each, then how many and the server's counts; every cell cleaned."""
    now = time.time() if now is None else now
    shown = list(select(data.get("devices", [])) if devices is None else devices)
    rows = [COLUMNS]
    for d in shown:
        rows.append((clean(d.get("key") or "?"), clean(d.get("name") or "-"),
                     clean(d.get("platform") or "-"), clean(d.get("address") or "-"),
                     clean(d.get("state") or "?"), progress(d), ago(d.get("last_seen"), now),
                     clean(d.get("reason") or "", MAX_REASON)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    total = data.get("total")
    total = total if isinstance(total, int) and not isinstance(total, bool) else \
        len(data.get("devices", []))
    what = f"{len(shown)} devices" if len(shown) == total else f"{len(shown)} of {total} devices"
    return "\n".join([*lines, what + _counts(data.get("counts", {}))])


def _counts(counts: Mapping[str, Any]) -> str:
    """`` (failed: 2, installing: 1, ...)`` in the page's order, states without devices left out."""
    names = sorted(counts, key=lambda s: (RANK.get(str(s), len(STATES)), str(s)))
    parts = [f"{clean(k)}: {clean(counts[k])}" for k in names if counts[k]]
    return f" ({', '.join(parts)})" if parts else ""
