"""One device as the state database's row says, and who a request or report claims to be."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from builder.factory.identity import PLATFORM_VALUE_RE
from builder.factory.state import SILENT_AFTER, State, derive
from builder.factory.values import MAC_RE, SERIAL_RE, normalize_mac


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
    """One device as its row stood when read (with what this server changed since)."""

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
    progress: int = 0
    downloads: int = 0
    phase: str = "discovery"
    result: str = "running"
    message: str | None = None
    failure: str | None = None
    version: str | None = None
    fingerprint: str | None = None
    keystore: str | None = None
    counter: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""
    first_seen: float | None = None
    last_seen: float | None = None
    reported_at: float | None = None
    conflict_at: float | None = None
    id: int = 0
    silent_after: float = SILENT_AFTER

    @classmethod
    def from_row(cls, row: Mapping[str, Any], silent_after: float = SILENT_AFTER) -> Device:
        """The device of a ``devices`` row."""
        names = {f.name for f in fields(cls)} - {"silent_after"}
        return cls(**{k: v for k, v in row.items() if k in names}, silent_after=silent_after)

    def derived(self, now: float | None = None) -> State:
        """State, percent and reason (``builder.factory.state``)."""
        return derive(vars(self), time.time() if now is None else now, self.silent_after)

    @property
    def state(self) -> str:
        """The state word, for the page and scripts."""
        return self.derived().state

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready: the interface's fields (docs/factory.md, "Status JSON")."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("id", "silent_after", "reported_at", "conflict_at", "progress")}
        derived = self.derived(now)
        out.update(state=derived.state, percent=derived.percent, reason=derived.reason)
        for name in ("first_seen", "last_seen"):
            if out[name] is not None:
                out[name] = round(out[name], 3)
        return out


@dataclass
class Live:
    """A download running on this server: where it stands, what is not written yet."""

    device: int  # the row's id
    position: int
    unwritten: int = 0
    written_at: float = field(default_factory=time.monotonic)
