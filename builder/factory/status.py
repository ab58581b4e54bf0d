"""What the provisioning server knows about each device: requests, bytes sent, phases, result.

The store is filled by two sources: the server itself (installer downloads by devices the
site lists) and the devices' signed reports (``POST /status``, ``builder.factory.identity``).
A device is known by serial number, else MAC; a later request that carries more of these
joins the same record. Requests that name no listed device and reports past ``MAX_DEVICES``
are counted, not stored one by one, so made-up identities cannot grow the table. Optionally
every event is appended to a JSON Lines file.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from builder.factory.identity import PLATFORM_VALUE_RE, Report
from builder.factory.values import MAC_RE, SERIAL_RE, normalize_mac

MAX_PHASES = 64
MAX_CONFLICTS = 8
# Devices the site does not list get a record from their first signed report, up to this
# many; beyond it their reports are counted (``unknown.reports``) and answered 503.
MAX_DEVICES = 10_000
PAGE = 1000  # devices per /status.json page unless ?limit= says otherwise
MAX_PAGE = 10_000


@dataclass(frozen=True)
class Identity:
    """Who a request or report comes from, as far as it says."""

    serial: str | None = None
    mac: str | None = None
    platform: str | None = None
    address: str | None = None

    @property
    def key(self) -> str | None:
        """Serial number, else MAC, else None (an anonymous request)."""
        return self.serial or self.mac


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
            and rev.isascii() and rev.isdigit() and len(rev) <= 6:
        platform = f"{arch}-{machine}-r{int(rev)}"
    return Identity(serial if SERIAL_RE.match(serial) else None,
                    normalize_mac(mac) if MAC_RE.match(mac) else None, platform, address)


@dataclass
class Device:
    """Everything known about one device."""

    key: str
    serial: str | None = None
    mac: str | None = None
    platform: str | None = None
    address: str | None = None
    name: str | None = None
    listed: bool = False
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
    fingerprint: str | None = None
    keystore: str | None = None
    counter: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0

    @property
    def state(self) -> str:
        """Phase and result in one word, for the page and scripts."""
        if self.conflicts:
            return "conflict"
        if self.result == "fail":
            return "failed"
        return "done" if self.result == "ok" and self.phase in ("done", "installed") else self.phase

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``state`` (shallow: serialized at once, never kept)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["state"] = self.state
        return out


class StatusStore:
    """Device records, keyed by serial number or MAC (one record per device)."""

    def __init__(self, log_tail: int = 16 * 1024, record: Path | None = None) -> None:
        self.log_tail = log_tail
        self.record_path = record
        self.devices: dict[str, Device] = {}
        self._index: dict[str, Device] = {}
        self._order: list[str] = []  # device keys, sorted: pages of /status.json
        self.unlisted = 0
        self.unknown = {"requests": 0, "downloads": 0, "reports": 0}
        self.started = time.time()

    def find(self, who: Identity, name: str | None = None, *, listed: bool = False,
             create: bool = True) -> Device | None:
        """The record of ``who``, created when new (``create``; for devices the site does not
        list, up to MAX_DEVICES); fills in what the identity adds. None when there is none."""
        device = self._lookup(who)
        now = time.time()
        if device is None:
            key = who.key
            if key is None or not create or (not listed and self.unlisted >= MAX_DEVICES):
                return None
            device = Device(key, first_seen=now)
            self.unlisted += not listed
            self.devices[key] = device
            bisect.insort(self._order, key)
        for attr in ("serial", "mac", "platform", "address"):
            if (value := getattr(who, attr)) is not None:
                setattr(device, attr, value)
        device.listed = device.listed or listed
        if name:
            device.name = name
        self._rekey(device)
        device.last_seen = now
        return device

    def lookup(self, who: Identity) -> Device | None:
        """The record of ``who``, changing nothing; None when there is none."""
        return self._lookup(who)

    def _lookup(self, who: Identity) -> Device | None:
        device = self._index.get(who.serial) if who.serial else None
        found = self._index.get(who.mac) if who.mac else None
        # One MAC, two serial numbers: a replaced board; keep them apart.
        if device is None and found is not None and not (
                who.serial and found.serial and found.serial != who.serial):
            device = found
        return device

    def _rekey(self, device: Device) -> None:
        better = device.serial or device.mac or device.key
        if better != device.key:
            self.devices.pop(device.key, None)
            del self._order[bisect.bisect_left(self._order, device.key)]
            device.key = better
            self.devices[better] = device
            bisect.insort(self._order, better)
        for k in (device.serial, device.mac):
            if k:
                self._index[k] = device

    def note_request(self, device: Device | None, path: str) -> None:
        """Count one request by ``device`` (None: a device the site does not list)."""
        if device is None:
            self.unknown["requests"] += 1
            return
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

    def finish_download(self, device: Device | None, complete: bool) -> None:
        """The download reached the end of the file (``complete``) or stopped early."""
        if not complete:
            return
        if device is None:
            self.unknown["downloads"] += 1
            return
        device.downloads += 1
        if device.phase in ("discovery", "download"):
            self._phase(device, "downloaded", "ok", "server")
        self._record("download", device)

    def report(self, device: Device, report: Report) -> None:
        """Apply a device's own signed, accepted report."""
        self._phase(device, report.phase, report.result, "device")
        device.message = report.fields.get("message", device.message)
        device.version = report.fields.get("version", device.version)
        device.fingerprint, device.keystore = report.fingerprint, report.keystore
        device.counter = report.counter
        if report.log:
            device.log = (device.log + report.log)[-self.log_tail:] if self.log_tail else ""
        self._record("report", device, report.log)

    def conflict(self, device: Device, report: Report, registered: str) -> None:
        """A correctly signed report under another key than the registered one: shown, not
        applied. ``registered`` says where the registered key was kept."""
        why = ("the registered key was kept in RAM (no ONIE-BOOT): a reboot makes a new one"
               if registered == "ram" else "the registered key was kept on ONIE-BOOT")
        entry = {"fingerprint": report.fingerprint, "keystore": report.keystore,
                 "phase": report.phase, "result": report.result, "time": round(time.time(), 3),
                 "note": why}
        device.conflicts.append(entry)
        del device.conflicts[:-MAX_CONFLICTS]
        self._record("conflict", device)

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
                 "phase": device.phase, "result": device.result, "state": device.state,
                 "fingerprint": device.fingerprint, "log": log[-self.log_tail:]}
        with self.record_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    def snapshot(self, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
        """The JSON of ``GET /status.json``: one page of devices (sorted by key), the counts
        of every state over all devices, and what was counted rather than stored."""
        counts: dict[str, int] = {}
        for device in self.devices.values():
            counts[device.state] = counts.get(device.state, 0) + 1
        keys = self._order[offset:offset + limit]
        return {"devices": [self.devices[k].as_dict() for k in keys], "counts": counts,
                "total": len(self._order), "offset": offset, "limit": limit,
                "unknown": dict(self.unknown), "uptime": round(time.time() - self.started, 1)}

