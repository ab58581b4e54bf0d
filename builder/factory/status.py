"""What the provisioning server knows about each device: requests, bytes sent, phases, result,
kept in the state database (``builder.factory.db``) so a restart, a ``kill -9`` or a second
server sees the same.

The store is filled by two sources: the server itself (installer downloads by devices the
site lists, through the journal thread; download progress is kept in memory and written at
most every ``PROGRESS_SECONDS`` and at the end) and the devices' signed reports (``POST
/status``, ``builder.factory.identity``; committed before they are answered). Every device of
the site file has a row from the start (``waiting``). A device is known by serial number,
else MAC; a later request that carries more of these joins the same record. Requests that
name no listed device and reports past ``MAX_DEVICES`` are counted, not stored one by one, so
made-up identities cannot grow the table. Each device's state is derived from its row by
``builder.factory.state``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from builder.errors import BuildError
from builder.factory.db import devices as rows
from builder.factory.db.engine import Database, describe
from builder.factory.db.journal import Journal
from builder.factory.db.migrate import LOCK_ID, upgrade
from builder.factory.device import Device, Identity, Live, identity_from_headers
from builder.factory.identity import Report
from builder.factory.site import Site
from builder.factory.state import SILENT_AFTER, STATES, derive

__all__ = ["MAX_DEVICES", "PAGE", "Device", "Identity", "StatusStore", "identity_from_headers"]

MAX_PHASES = 64
MAX_CONFLICTS = 8
# Devices the site does not list get a record from their first signed report, up to this
# many; beyond it their reports are counted (``unknown.reports``) and answered 503.
MAX_DEVICES = 10_000
PAGE = 1000  # devices per /status.json page unless ?limit= says otherwise
MAX_PAGE = 10_000
Op = Callable[[Connection], None]
UNLISTED_SLACK = 1000  # below MAX_DEVICES - this, the running count decides without a query
PROGRESS_SECONDS = 3.0  # a running download's progress reaches the database this often


class StatusStore:
    """Device records in the state database, keyed by serial number or MAC."""

    def __init__(self, db: Database, site: Site | None = None, *, log_tail: int = 16 * 1024,
                 silent_after: float = SILENT_AFTER) -> None:
        self.db = db
        self.log_tail = log_tail
        self.silent_after = silent_after
        self.unknown = {"requests": 0, "downloads": 0, "reports": 0}
        self.started = time.time()
        self.journal = Journal(db)
        # Downloads running here, by the request's Device object (one device may have two: a
        # resume may start before the server notices that the first transfer broke).
        self._live: dict[int, Live] = {}
        self._lock = threading.Lock()
        if site is not None:
            self.seed(site)
        with db.read() as conn:
            self._unlisted = rows.count_unlisted(conn)

    @classmethod
    def open(cls, url: str, site: Site | None = None) -> StatusStore:
        """The store on the database at ``url`` (normalized), migrated to the newest schema."""
        db = Database(url)
        try:
            upgrade(db)
        except SQLAlchemyError as exc:
            db.close()
            shown = make_url(url).render_as_string(hide_password=True)
            raise BuildError(f"cannot open the state database {shown}: {describe(exc)}",
                             hint="check `serve --db` or the site file's 'database:' "
                             "(docs/factory.md, \"Database\")") from None
        status = site.status if site is not None else None
        return cls(db, site, log_tail=status.log_tail if status else 16 * 1024,
                   silent_after=status.silent_after if status else SILENT_AFTER)

    def seed(self, site: Site) -> None:
        """A row for every device of the site file (``waiting`` until seen)."""
        with self.db.atomic() as conn:
            self._serialize(conn)
            rows.seed(conn, [{"key": d.key, "serial": d.serial, "mac": d.mac, "name": d.name,
                              "platform": d.platform} for d in site.devices])

    def _full(self, conn: Connection) -> bool:
        """True when MAX_DEVICES unlisted devices have records: counted in the database when
        this server's running count gets near (other servers add theirs)."""
        with self._lock:
            near = self._unlisted >= MAX_DEVICES - UNLISTED_SLACK
        if near:
            counted = rows.count_unlisted(conn)
            with self._lock:
                self._unlisted = counted
            return counted >= MAX_DEVICES
        return False

    def count_unknown(self, what: str) -> None:
        """Count one request, download or report that made no record."""
        with self._lock:
            self.unknown[what] += 1

    def _serialize(self, conn: Connection) -> None:
        """Servers starting at once seed one after the other (PostgreSQL)."""
        if self.db.backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})

    def _device(self, row: Mapping[str, Any]) -> Device:
        return Device.from_row(row, self.silent_after)

    def find(self, who: Identity, name: str | None = None, *, listed: bool = False,
             create: bool = True) -> Device | None:
        """The record of ``who``, created when new (``create``; for devices the site does not
        list, up to MAX_DEVICES); fills in what the identity adds. None when there is none.
        A device already known as it says is only read: the event the caller records next
        (a request, a report) brings its ``last_seen`` up to date."""
        now = time.time()
        with self.db.read() as conn:
            row = rows.lookup(conn, who.serial, who.mac)
        if row is not None and not self._changes(row, who, name, listed, now):
            return self._device(row)
        with self.db.atomic() as conn:
            row = rows.lookup(conn, who.serial, who.mac, lock=True)
            if row is None:
                key = who.key
                if key is None or not create or (not listed and self._full(conn)):
                    return None
                values = {"key": key, "serial": who.serial, "mac": who.mac,
                          "platform": who.platform, "address": who.address, "name": name,
                          "listed": listed, "first_seen": now, "last_seen": now}
                made = rows.create(conn, values)
                if made is None:  # another server made it meanwhile
                    row = rows.lookup(conn, who.serial, who.mac, lock=True)
                    assert row is not None
                else:
                    row = {**rows.NEW_ROW, **values, "id": made, "message": None,
                           "failure": None, "version": None, "fingerprint": None,
                           "keystore": None, "last_path": None, "installer": None,
                           "reported_at": None, "conflict_at": None}
                    with self._lock:
                        self._unlisted += not listed
            changes = self._changes(row, who, name, listed, now)
            if changes:
                changes["last_seen"] = now
                rows.change(conn, row["id"], changes)
                row.update(changes)
        return self._device(row)

    @staticmethod
    def _changes(row: Mapping[str, Any], who: Identity, name: str | None, listed: bool,
                 now: float) -> dict[str, Any]:
        """What ``who`` adds to ``row``: identity, the listed mark, a name, a better key."""
        changes: dict[str, Any] = {a: v for a in ("serial", "mac", "platform", "address")
                                   if (v := getattr(who, a)) is not None and row[a] != v}
        if listed and not row["listed"]:
            changes["listed"] = True
        if name and row["name"] != name:
            changes["name"] = name
        better = changes.get("serial", row["serial"]) or changes.get("mac", row["mac"]) or row["key"]
        if better != row["key"]:
            changes["key"] = better
        if row["first_seen"] is None:
            changes["first_seen"] = now
        return changes

    def lookup(self, who: Identity) -> Device | None:
        """The record of ``who``, changing nothing; None when there is none."""
        with self.db.read() as conn:
            row = rows.lookup(conn, who.serial, who.mac)
        return self._device(row) if row is not None else None

    # --- the server's own events: queued for the journal thread -------------------------------

    def note_request(self, device: Device | None, path: str) -> None:
        """Count one request by ``device`` (None: a device the site does not list)."""
        if device is None:
            with self._lock:
                self.unknown["requests"] += 1
            return
        now, path = time.time(), path[:200]

        def op(conn: Connection) -> None:
            if (row := rows.load(conn, device.id)) is not None:
                rows.change(conn, device.id, {"requests": row["requests"] + 1,
                                              "last_path": path, "last_seen": now})
                rows.add_event(conn, device.id, time=now, source="server", kind="request",
                               path=path)

        device.requests += 1
        device.last_path = path
        self.journal.put(op)

    def not_found(self, device: Device | None, name: str, path: str) -> None:
        """The installer the site assigns to ``device`` is missing on the server (404)."""
        if device is None:
            return
        now, why = time.time(), f"installer {name} missing on the server (404)"

        def op(conn: Connection) -> None:
            rows.change(conn, device.id, {"failure": why, "last_seen": now})
            rows.add_event(conn, device.id, time=now, source="server", kind="not-found",
                           message=why, path=path[:200], status=404)

        device.failure = why
        self.journal.put(op)

    def start_download(self, device: Device, name: str, size: int, offset: int) -> None:
        """An installer download (or a resumed part of it) begins."""
        now = time.time()
        with self._lock:
            self._live[id(device)] = Live(device.id, offset)

        def op(conn: Connection) -> None:
            if (row := rows.load(conn, device.id)) is None:
                return
            values: dict[str, Any] = {"installer": name, "size": size, "progress": offset,
                                      "failure": None, "last_seen": now}
            if row["phase"] in ("discovery", "download", "downloaded"):
                values.update(self._phase(row, "download", "running", "server", now))
            rows.change(conn, device.id, values)
            rows.add_event(conn, device.id, time=now, source="server", kind="download",
                           phase="download", result="running", message=f"{name} from byte {offset}",
                           bytes=offset, size=size)

        self.journal.put(op)

    def add_bytes(self, device: Device, count: int) -> None:
        """Bytes of an installer actually written to ``device``: counted in memory, written
        at most every PROGRESS_SECONDS."""
        with self._lock:
            live = self._live.get(id(device))
            if live is None:
                return
            live.position += count
            live.unwritten += count
            if time.monotonic() - live.written_at < PROGRESS_SECONDS:
                return
            unwritten, position, live.unwritten, live.written_at = \
                live.unwritten, live.position, 0, time.monotonic()
        self.journal.put(self._progress(device, unwritten, position, None))

    def finish_download(self, device: Device | None, complete: bool) -> None:
        """The download reached the end of the file (``complete``) or stopped early."""
        if device is None:
            if complete:
                with self._lock:
                    self.unknown["downloads"] += 1
            return
        with self._lock:
            live = self._live.pop(id(device), None)
        if live is not None:
            self.journal.put(self._progress(device, live.unwritten, live.position, complete))

    def _progress(self, device: Device, count: int, position: int,
                  complete: bool | None) -> Op:
        now = time.time()

        def op(conn: Connection) -> None:
            if (row := rows.load(conn, device.id)) is None:
                return
            values: dict[str, Any] = {"bytes_sent": row["bytes_sent"] + count,
                                      "progress": position, "last_seen": now}
            result = "running" if complete is None else "ok" if complete else "stopped"
            if complete:
                values["downloads"] = row["downloads"] + 1
                if row["phase"] in ("discovery", "download"):
                    values.update(self._phase(row, "downloaded", "ok", "server", now))
            rows.change(conn, device.id, values)
            rows.add_event(conn, device.id, time=now, source="server", kind="download",
                           phase="download", result=result, bytes=position, size=row["size"])

        return op

    # --- devices' reports: in the transaction of builder.factory.reports ---------------------

    def atomic(self) -> AbstractContextManager[Connection]:
        """One transaction for a report and its registry change (``Database.atomic``)."""
        return self.db.atomic()

    def report(self, device: Device, report: Report) -> None:
        """Apply a device's own signed, accepted report."""
        now = time.time()
        with self.db.atomic() as conn:
            row = rows.load(conn, device.id)
            assert row is not None
            log = row["log"]
            if report.log:
                log = (log + report.log)[-self.log_tail:] if self.log_tail else ""
            values = {**self._phase(row, report.phase, report.result, "device", now),
                      "message": report.fields.get("message", row["message"]),
                      "version": report.fields.get("version", row["version"]),
                      "fingerprint": report.fingerprint, "keystore": report.keystore,
                      "counter": report.counter, "log": log, "failure": None,
                      "reported_at": now, "last_seen": now}
            rows.change(conn, device.id, values)
            rows.add_event(conn, device.id, time=now, source="device", kind="report",
                           phase=report.phase, result=report.result,
                           message=report.fields.get("message"))
        for name, value in values.items():
            setattr(device, name, value)

    def conflict(self, device: Device, report: Report, registered: str) -> None:
        """A correctly signed report under another key than the registered one: shown, not
        applied. ``registered`` says where the registered key was kept."""
        why = ("the registered key was kept in RAM (no ONIE-BOOT): a reboot makes a new one"
               if registered == "ram" else "the registered key was kept on ONIE-BOOT")
        now = time.time()
        entry = {"fingerprint": report.fingerprint, "keystore": report.keystore,
                 "phase": report.phase, "result": report.result, "time": round(now, 3),
                 "note": why}
        with self.db.atomic() as conn:
            row = rows.load(conn, device.id)
            assert row is not None
            values = {"conflicts": [*row["conflicts"], entry][-MAX_CONFLICTS:],
                      "conflict_at": now, "last_seen": now}
            rows.change(conn, device.id, values)
            rows.add_event(conn, device.id, time=now, source="device", kind="conflict",
                           phase=report.phase, result=report.result,
                           message=f"signed by {report.fingerprint}: {why}")
        for name, value in values.items():
            setattr(device, name, value)

    @staticmethod
    def _phase(row: Mapping[str, Any], phase: str, result: str, source: str,
               now: float) -> dict[str, Any]:
        entry = {"phase": phase, "result": result, "source": source, "time": round(now, 3)}
        return {"phase": phase, "result": result,
                "phases": [*row["phases"], entry][-MAX_PHASES:]}

    # --- reading -------------------------------------------------------------------------------

    def _overlay(self, devices: list[Device]) -> list[Device]:
        """``devices`` with this server's unwritten download progress."""
        with self._lock:
            running: dict[int, list[Live]] = {}
            for live in self._live.values():
                running.setdefault(live.device, []).append(live)
        for device in devices:
            for live in running.get(device.id, []):
                device.bytes_sent += live.unwritten
                device.progress = live.position
        return devices

    def counts(self) -> dict[str, int]:
        """Devices by state, over all of them (every state named, zeros included)."""
        now = time.time()
        out = dict.fromkeys(STATES, 0)
        with self.db.read() as conn:
            for row in rows.state_rows(conn):
                out[derive(row, now, self.silent_after).state] += 1
        return out

    def snapshot(self, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
        """The JSON of ``GET /status.json``: one page of devices (sorted by key), the counts
        of every state over all devices, and what was counted rather than stored."""
        self.journal.sync()
        now = time.time()
        with self.db.read() as conn:
            total, page = rows.page(conn, offset, limit)
        counts = self.counts()
        devices = [d.as_dict(now) for d in self._overlay([self._device(row) for row in page])]
        with self._lock:
            unknown = dict(self.unknown)
        return {"devices": devices, "counts": counts, "total": total, "offset": offset,
                "limit": limit, "unknown": unknown, "uptime": round(time.time() - self.started, 1),
                "silent_after": self.silent_after}

    def history(self, key: str) -> dict[str, Any] | None:
        """The JSON of ``GET /status/<key>.json``: the device and its last events, oldest
        first; None for an unknown key."""
        self.journal.sync()
        with self.db.read() as conn:
            row = rows.by_key(conn, key)
            if row is None:
                return None
            history = rows.history(conn, row["id"])
        for event in history:
            event["time"] = round(event["time"], 3)
        [device] = self._overlay([self._device(row)])
        return {"device": device.as_dict(), "events": history}

    def close(self) -> None:
        """Write what is queued, then release the database."""
        self.journal.close()
        self.db.close()
