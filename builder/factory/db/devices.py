"""Device rows and their events: the statements ``builder.factory.status`` runs, each on the
connection of the transaction it is part of."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from builder.factory.db.schema import devices, events

HISTORY = 500  # events of /status/<key>.json
EVENT_FIELDS = ("time", "source", "kind", "phase", "result", "message", "path", "status", "bytes",
                "size")
# Columns the state derivation and the counts read (not the log tails).
STATE_COLUMNS = ("id", "key", "first_seen", "last_seen", "phase", "result", "message", "failure",
                 "size", "progress", "conflicts", "reported_at", "conflict_at")
# Statements built once: SQLAlchemy compiles each shape once and caches it.
_BY_SERIAL = select(devices).where(devices.c.serial == bindparam("ident"))
_BY_MAC = (select(devices).where(devices.c.mac == bindparam("ident"))
           .order_by(devices.c.last_seen.desc()).limit(1))
_BY_ID = select(devices).where(devices.c.id == bindparam("ident"))
_CHANGE = update(devices).where(devices.c.id == bindparam("ident"))
_ADD_EVENT = insert(events)
NEW_ROW: dict[str, Any] = {"listed": False, "requests": 0, "size": 0, "bytes_sent": 0,
                           "progress": 0, "downloads": 0, "phase": "discovery",
                           "result": "running", "counter": 0, "conflicts": [], "phases": [],
                           "log": ""}


def lookup(conn: Connection, serial: str | None, mac: str | None, *,
           lock: bool = False) -> dict[str, Any] | None:
    """The row of the device with this serial number, else this MAC (unless that row has
    another serial: a replaced board stays apart); ``lock`` holds it until the commit."""
    def one(query: Any, value: str) -> dict[str, Any] | None:
        query = query.with_for_update() if lock and conn.dialect.name == "postgresql" else query
        row = conn.execute(query, {"ident": value}).mappings().first()
        return dict(row) if row is not None else None

    found = one(_BY_SERIAL, serial) if serial else None
    if found is None and mac:
        by_mac = one(_BY_MAC, mac)
        if by_mac is not None and not (serial and by_mac["serial"] and by_mac["serial"] != serial):
            found = by_mac
    return found


def by_key(conn: Connection, key: str) -> dict[str, Any] | None:
    """The row whose key is ``key``."""
    row = conn.execute(select(devices).where(devices.c.key == key)).mappings().first()
    return dict(row) if row is not None else None


def load(conn: Connection, device_id: int) -> dict[str, Any] | None:
    """The row ``device_id``, locked until the commit (PostgreSQL; SQLite has one writer)."""
    query = _BY_ID.with_for_update() if conn.dialect.name == "postgresql" else _BY_ID
    row = conn.execute(query, {"ident": device_id}).mappings().first()
    return dict(row) if row is not None else None


def create(conn: Connection, values: Mapping[str, Any]) -> int | None:
    """Insert a device row; its id, or None when another server inserted it first (SQLite's
    write lock, taken when the transaction began, leaves no such race)."""
    statement = insert(devices).values({**NEW_ROW, **values})
    try:
        if conn.dialect.name == "postgresql":
            with conn.begin_nested():
                done = conn.execute(statement)
        else:
            done = conn.execute(statement)
    except IntegrityError:
        return None
    key = done.inserted_primary_key
    return int(key[0]) if key is not None else None


def change(conn: Connection, device_id: int, values: Mapping[str, Any]) -> None:
    """Set ``values`` in row ``device_id``."""
    if values:
        conn.execute(_CHANGE, {"ident": device_id, **values})


def add_event(conn: Connection, device_id: int, **fields: Any) -> None:
    """Append an event to the device's history."""
    conn.execute(_ADD_EVENT, {"device_id": device_id, **{k: fields.get(k) for k in EVENT_FIELDS}})


def count_unlisted(conn: Connection) -> int:
    """Rows of devices the site does not list."""
    return int(conn.execute(select(func.count()).select_from(devices)
                            .where(devices.c.listed.is_(False))).scalar_one())


def page(conn: Connection, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The number of rows and one page of them, by key."""
    total = int(conn.execute(select(func.count()).select_from(devices)).scalar_one())
    rows = conn.execute(select(devices).order_by(devices.c.key).offset(offset).limit(limit))
    return total, [dict(r) for r in rows.mappings()]


def state_rows(conn: Connection) -> list[dict[str, Any]]:
    """What the state of every device is derived from."""
    query = select(*(devices.c[name] for name in STATE_COLUMNS))
    return [dict(r) for r in conn.execute(query).mappings()]


def history(conn: Connection, device_id: int, limit: int = HISTORY) -> list[dict[str, Any]]:
    """The device's last ``limit`` events, oldest first."""
    query = (select(*(events.c[name] for name in EVENT_FIELDS)).where(events.c.device_id == device_id)
             .order_by(events.c.id.desc()).limit(limit))
    return [dict(r) for r in reversed(conn.execute(query).mappings().all())]


def seed(conn: Connection, listed: Iterable[Mapping[str, Any]]) -> int:
    """Rows for the site file's devices that have none (``key``, ``serial``, ``mac``, ``name``,
    ``platform``); names and the listed mark brought up to date. Returns the rows made."""
    made = 0
    for entry in listed:
        row = lookup(conn, entry["serial"], entry["mac"])
        if row is None:
            made += create(conn, {**entry, "listed": True}) is not None
        elif not row["listed"] or (entry["name"] and row["name"] != entry["name"]):
            change(conn, row["id"], {"listed": True, "name": entry["name"] or row["name"]})
    return made
