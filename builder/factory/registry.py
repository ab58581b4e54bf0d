"""The device key registry: which Ed25519 key speaks for which device, trust on first use, and
the highest report counter seen from it (replays are refused).

``KeyRegistry`` is the seam; ``DbRegistry`` keeps the bindings in the ``keys`` table of the
state database (``builder.factory.db``), so several servers sharing one PostgreSQL database
share trust on first use and replay protection. The database decides races: a first
registration is an INSERT under a primary key, a counter moves only up
(``UPDATE ... WHERE counter < :new``); the loser of a race gets ``Raced`` and the caller judges
the report again in a new transaction.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from builder.factory.db.engine import Database
from builder.factory.db.schema import keys
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
    """Where bindings live (the state database here)."""

    def find(self, serial: str | None, mac: str | None) -> Binding | None:
        """The binding of the device with this serial number, else this MAC."""

    def register(self, binding: Binding) -> None:
        """Bind a new key (first contact); ``Raced`` when another server bound one first."""

    def advance(self, binding: Binding, counter: int) -> None:
        """Remember ``counter`` as the last accepted one; ``Raced`` when it is no longer above
        the stored one (another server accepted that counter meanwhile)."""


class Raced(Exception):
    """Another server changed the binding between the judgement and the write."""


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


class DbRegistry:
    """Bindings in the ``keys`` table; calls join the thread's open transaction
    (``Database.atomic``), so a report and its registry change commit together."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __len__(self) -> int:
        with self.db.atomic() as conn:
            return len(conn.execute(select(keys.c.device)).all())

    def find(self, serial: str | None, mac: str | None) -> Binding | None:
        """The binding of the device with this serial number, else this MAC."""
        if serial:
            where = keys.c.serial == serial
        elif mac:
            where = keys.c.mac == mac
        else:
            return None
        with self.db.atomic() as conn:
            row = conn.execute(select(keys).where(where).limit(1)).mappings().first()
        return Binding(**row) if row is not None else None

    def register(self, binding: Binding) -> None:
        """Bind a new key (first contact); ``Raced`` when the device has one already."""
        values = {"device": binding.device, "serial": binding.serial, "mac": binding.mac,
                  "key": binding.key, "keystore": binding.keystore, "counter": binding.counter,
                  "registered": binding.registered}
        with self.db.atomic() as conn:
            try:
                conn.execute(insert(keys).values(**values))
            except IntegrityError:
                raise Raced(binding.device) from None

    def advance(self, binding: Binding, counter: int) -> None:
        """Remember ``counter``; ``Raced`` unless it is still above the stored one."""
        with self.db.atomic() as conn:
            done = conn.execute(update(keys).where(
                keys.c.device == binding.device, keys.c.key == binding.key,
                keys.c.counter < counter).values(counter=counter))
        if done.rowcount != 1:
            raise Raced(binding.device)
        binding.counter = counter
