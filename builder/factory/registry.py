"""The device key registry: which Ed25519 key speaks for which device, trust on first use, and
the highest report counter seen from it (replays are refused).

``KeyRegistry`` is the seam: ``FileRegistry`` keeps the bindings in memory and, with
``serve --keys FILE``, appends every change to a JSON Lines file that it replays at start
(the same storage as ``--record``). A database backend implements the same three methods.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from builder.errors import BuildError
from builder.factory.identity import Report


@dataclass
class Binding:
    """A device's key as registered on first contact, and its last accepted counter."""

    device: str
    serial: str | None
    mac: str | None
    key: str
    keystore: str
    counter: int
    registered: float


class Verdict(enum.Enum):
    """What the registry makes of a correctly signed report."""

    NEW = "new"  # no key for this device yet: trust on first use
    KNOWN = "known"  # the registered key, a counter above the last one
    REPLAY = "replay"  # the registered key, a counter not above the last one
    CONFLICT = "conflict"  # another key than the registered one


class KeyRegistry(Protocol):
    """Where bindings live (memory and a file here; a database later)."""

    def find(self, serial: str | None, mac: str | None) -> Binding | None:
        """The binding of the device with this serial number, else this MAC."""

    def register(self, binding: Binding) -> None:
        """Bind a new key (first contact)."""

    def advance(self, binding: Binding, counter: int) -> None:
        """Remember ``counter`` as the last accepted one."""


def judge(registry: KeyRegistry, report: Report) -> tuple[Verdict, Binding | None]:
    """The verdict on a report whose signature has been checked, with the binding it met."""
    binding = registry.find(report.serial, report.mac)
    if binding is None:
        return Verdict.NEW, None
    if binding.key != report.key:
        return Verdict.CONFLICT, binding
    if report.counter <= binding.counter:
        return Verdict.REPLAY, binding
    return Verdict.KNOWN, binding


def binding_for(report: Report) -> Binding:
    """The binding a first report makes."""
    device = report.serial or report.mac or ""
    return Binding(device, report.serial, report.mac, report.key, report.keystore, report.counter,
                   round(time.time(), 3))


class FileRegistry:
    """Bindings in memory, each change appended to ``path`` (JSON Lines) when given."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._by_serial: dict[str, Binding] = {}
        self._by_mac: dict[str, Binding] = {}
        self._by_device: dict[str, Binding] = {}
        if path is not None and path.exists():
            self._replay(path)

    def __len__(self) -> int:
        return len(self._by_device)

    def find(self, serial: str | None, mac: str | None) -> Binding | None:
        """The binding of the device with this serial number, else this MAC."""
        if serial:
            return self._by_serial.get(serial)
        return self._by_mac.get(mac) if mac else None

    def register(self, binding: Binding) -> None:
        """Bind a new key (first contact)."""
        self._index(binding)
        self._append({"event": "bind", **asdict(binding)})

    def advance(self, binding: Binding, counter: int) -> None:
        """Remember ``counter`` as the last accepted one."""
        binding.counter = counter
        self._append({"event": "counter", "device": binding.device, "counter": counter})

    def _index(self, binding: Binding) -> None:
        self._by_device[binding.device] = binding
        if binding.serial:
            self._by_serial[binding.serial] = binding
        if binding.mac:
            self._by_mac[binding.mac] = binding

    def _append(self, entry: dict[str, object]) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")

    def _replay(self, path: Path) -> None:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                entry = json.loads(line)
                event = entry.pop("event")
                if event == "bind":
                    self._index(Binding(**entry))
                elif event == "counter":
                    self._by_device[entry["device"]].counter = int(entry["counter"])
                else:
                    raise ValueError(f"unknown event {event!r}")
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise BuildError(f"{path}:{number}: not a key registry entry: {exc}",
                                 hint="the file `serve --keys` writes: one JSON object a line"
                                 ) from None
