"""What the provisioning server knows about each device: requests, bytes sent, phases, result.

The store is filled by two sources: the server itself (every request, every installer download)
and the devices' authenticated reports (``POST /status``, see ``parse_report``). A device is
known by serial number, else MAC, else its address; a later request that carries more of
these joins the same record. Optionally every event is appended to a JSON Lines file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.factory.values import MAC_RE, SERIAL_RE, normalize_mac

AUTH_SCHEME = "ONIE-HMAC-SHA256"
RESULTS = ("running", "ok", "fail")
PHASE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PLATFORM_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REPORT_KEYS = ("phase", "result", "serial", "mac", "platform", "version", "message")
MESSAGE_MAX = 200
MAX_PHASES = 64
MAX_DEVICES = 100_000  # beyond this, requests from new devices are served but not recorded


class ReportError(ValueError):
    """A status report that is malformed (HTTP 400)."""


@dataclass(frozen=True)
class Identity:
    """Who a request or report comes from, as far as it says."""

    serial: str | None = None
    mac: str | None = None
    platform: str | None = None
    address: str | None = None

    @property
    def key(self) -> str:
        """Serial number, else MAC, else ``ip:<address>``."""
        return self.serial or self.mac or f"ip:{self.address or 'unknown'}"


def identity_from_headers(headers: Mapping[str, str], address: str | None,
                          mac_hint: str | None = None) -> Identity:
    """The identity ONIE's request headers claim (values checked; bad ones dropped)."""
    serial = headers.get("ONIE-SERIAL-NUMBER", "").strip()
    mac = headers.get("ONIE-ETH-ADDR", "").strip() or (mac_hint or "")
    arch = headers.get("ONIE-ARCH", "").strip()
    machine = headers.get("ONIE-MACHINE", "").strip()
    rev = headers.get("ONIE-MACHINE-REV", "0").strip() or "0"
    platform = None
    if arch and machine and PLATFORM_VALUE_RE.match(arch) and PLATFORM_VALUE_RE.match(machine) \
            and rev.isdigit():
        platform = f"{arch}-{machine}-r{int(rev)}"
    return Identity(serial if SERIAL_RE.match(serial) else None,
                    normalize_mac(mac) if MAC_RE.match(mac) else None, platform, address)


def sign(token: bytes, body: bytes) -> str:
    """The ``Authorization`` value of a status report: HMAC-SHA256 of the body, hex."""
    return f"{AUTH_SCHEME} {hmac.new(token, body, hashlib.sha256).hexdigest()}"


def check_signature(token: bytes, body: bytes, authorization: str | None) -> bool:
    """True when ``authorization`` carries the body's HMAC under ``token`` (constant time)."""
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.upper() != AUTH_SCHEME:
        return False
    expected = hmac.new(token, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, value.strip().lower())


@dataclass(frozen=True)
class Report:
    """One status report: ``key=value`` lines, a blank line, then the log tail."""

    phase: str
    result: str
    fields: dict[str, str]
    log: str


def parse_report(body: bytes) -> Report:
    """Parse a report body; raise ReportError naming the first problem."""
    head, sep, tail = body.partition(b"\n\n")
    values: dict[str, str] = {}
    for number, raw in enumerate(head.decode("utf-8", "replace").splitlines(), start=1):
        key, eq, value = raw.partition("=")
        if not eq:
            raise ReportError(f"line {number}: expected 'key=value', got {raw[:40]!r}")
        if key not in REPORT_KEYS:
            raise ReportError(f"line {number}: unknown key {key[:20]!r}; expected one of "
                              f"{', '.join(REPORT_KEYS)}")
        values[key] = value.strip()
    phase = values.pop("phase", "")
    if not PHASE_RE.match(phase):
        raise ReportError(f"phase: expected lower-case letters, digits, '_' or '-' (at most 32), "
                          f"got {phase[:40]!r}")
    result = values.pop("result", "running")
    if result not in RESULTS:
        raise ReportError(f"result: expected one of {', '.join(RESULTS)}, got {result[:20]!r}")
    for key in ("serial", "platform", "version"):
        if key in values and not (SERIAL_RE if key == "serial" else PLATFORM_VALUE_RE).match(values[key]):
            raise ReportError(f"{key}: unexpected characters in {values[key][:40]!r}")
    if "mac" in values:
        if not MAC_RE.match(values["mac"]):
            raise ReportError(f"mac: expected a MAC address, got {values['mac'][:40]!r}")
        values["mac"] = normalize_mac(values["mac"])
    if "message" in values:
        values["message"] = values["message"][:MESSAGE_MAX]
    log = tail.decode("utf-8", "replace") if sep else ""
    return Report(phase, result, values, log)


@dataclass
class Device:
    """Everything known about one device."""

    key: str
    serial: str | None = None
    mac: str | None = None
    platform: str | None = None
    address: str | None = None
    name: str | None = None
    requests: int = 0
    last_path: str | None = None
    installer: str | None = None
    size: int = 0
    bytes_sent: int = 0
    downloads: int = 0
    phase: str = "discovery"
    result: str = "running"
    message: str | None = None
    version: str | None = None
    phases: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``state`` (phase and result in one word for the page and scripts)."""
        out = asdict(self)
        out["state"] = ("failed" if self.result == "fail"
                        else "done" if self.result == "ok" and self.phase in ("done", "installed")
                        else self.phase)
        return out


class StatusStore:
    """Device records, keyed by serial number, MAC or address (one record per device)."""

    def __init__(self, log_tail: int = 16 * 1024, record: Path | None = None) -> None:
        self.log_tail = log_tail
        self.record_path = record
        self.devices: dict[str, Device] = {}
        self._index: dict[str, Device] = {}
        self.started = time.time()

    def find(self, who: Identity, name: str | None = None) -> Device:
        """The record of ``who`` (created when new); fills in what the identity adds."""
        device = self._lookup(who)
        now = time.time()
        if device is None:
            device = Device(who.key, first_seen=now)
            if len(self.devices) >= MAX_DEVICES:
                return device  # made-up headers cannot grow memory without bound
            self.devices[device.key] = device
        for attr in ("serial", "mac", "platform", "address"):
            if (value := getattr(who, attr)) is not None:
                setattr(device, attr, value)
        if name:
            device.name = name
        self._rekey(device)
        device.last_seen = now
        return device

    def _lookup(self, who: Identity) -> Device | None:
        device = self._index.get(who.serial) if who.serial else None
        found = self._index.get(who.mac) if who.mac else None
        # One MAC, two serial numbers: a replaced board; keep them apart.
        if device is None and found is not None and not (
                who.serial and found.serial and found.serial != who.serial):
            device = found
        if device is None and who.address:
            found = self._index.get(f"ip:{who.address}")
            # An address joins a record only while one of the two is anonymous.
            anonymous = not (who.serial or who.mac)
            if found is not None and (anonymous or not (found.serial or found.mac)):
                device = found
        return device

    def _rekey(self, device: Device) -> None:
        better = device.serial or device.mac or device.key
        if better != device.key:
            self.devices.pop(device.key, None)
            device.key = better
            self.devices[better] = device
        for k in (device.serial, device.mac, f"ip:{device.address}" if device.address else None):
            if k:
                self._index[k] = device

    def note_request(self, device: Device, path: str) -> None:
        """Count one request by ``device``."""
        device.requests += 1
        device.last_path = path[:200]

    def start_download(self, device: Device, name: str, size: int, offset: int) -> None:
        """An installer download (or a resumed part of it) begins."""
        device.installer, device.size = name, size
        if device.phase in ("discovery", "download", "downloaded"):
            self._phase(device, "download", "running", "server")

    def add_bytes(self, device: Device, count: int) -> None:
        """Bytes of an installer actually written to ``device``."""
        device.bytes_sent += count
        device.last_seen = time.time()

    def finish_download(self, device: Device, complete: bool) -> None:
        """The download reached the end of the file (``complete``) or stopped early."""
        if complete:
            device.downloads += 1
            if device.phase in ("discovery", "download"):
                self._phase(device, "downloaded", "ok", "server")
            self._record("download", device)

    def report(self, device: Device, report: Report) -> None:
        """Apply a device's own status report."""
        self._phase(device, report.phase, report.result, "device")
        device.message = report.fields.get("message", device.message)
        device.version = report.fields.get("version", device.version)
        if report.log:
            device.log = (device.log + report.log)[-self.log_tail:] if self.log_tail else ""
        self._record("report", device, report.log)

    def _phase(self, device: Device, phase: str, result: str, source: str) -> None:
        device.phase, device.result = phase, result
        device.phases.append({"phase": phase, "result": result, "source": source,
                              "time": round(time.time(), 3)})
        del device.phases[:-MAX_PHASES]

    def _record(self, event: str, device: Device, log: str = "") -> None:
        if self.record_path is None:
            return
        entry = {"time": round(time.time(), 3), "event": event, "device": device.key,
                 "serial": device.serial, "mac": device.mac, "platform": device.platform,
                 "phase": device.phase, "result": device.result, "log": log[-self.log_tail:]}
        with self.record_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    def snapshot(self) -> dict[str, Any]:
        """The JSON of ``GET /status.json``."""
        devices = [d.as_dict() for d in sorted(self.devices.values(), key=lambda d: d.key)]
        counts: dict[str, int] = {}
        for d in devices:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        return {"devices": devices, "counts": counts, "uptime": round(time.time() - self.started, 1)}
