"""The state database without a server: the state each device's events lead to, and the
schema's migrations (an empty database to the newest version; a database at the first
version upgraded with its rows kept)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from builder.errors import BuildError
from builder.factory.db import migrate
from builder.factory.db.engine import Database, normalize_url
from builder.factory.db.schema import metadata
from builder.factory.device import Device, Identity
from builder.factory.identity import Report, parse_report
from builder.factory.state import State, derive
from builder.factory.status import StatusStore
from tests.serving import SimDevice

NOW = 1_000_000.0
SEEN = {"first_seen": NOW - 100, "last_seen": NOW - 10}

STATES = [
    # (case, row, (state, percent, reason))
    ("listed, never seen", {"first_seen": None}, ("waiting", None, None)),
    ("asked for an installer", {**SEEN}, ("discovering", None, None)),
    ("downloading", {**SEEN, "phase": "download", "size": 1000, "progress": 337},
     ("downloading", 33, None)),
    ("download of unknown size", {**SEEN, "phase": "download"}, ("downloading", 0, None)),
    ("downloaded: the installer runs", {**SEEN, "phase": "downloaded", "result": "ok"},
     ("installing", None, None)),
    ("the device says it installs", {**SEEN, "phase": "install"}, ("installing", None, None)),
    ("installed", {**SEEN, "phase": "done", "result": "ok"}, ("installed", None, None)),
    ("failed with the device's message", {**SEEN, "phase": "install", "result": "fail",
                                          "message": "rc=1\nno disk"},
     ("failed", None, "rc=1 no disk")),
    ("failed without a message", {**SEEN, "phase": "install", "result": "fail"},
     ("failed", None, "install failed")),
    ("the server's 404", {**SEEN, "phase": "discovery",
                          "failure": "installer a.bin missing on the server (404)"},
     ("failed", None, "installer a.bin missing on the server (404)")),
    ("silent for 17 min", {"first_seen": NOW - 5000, "last_seen": NOW - 17 * 60 - 30,
                           "phase": "download", "size": 10, "progress": 5},
     ("silent", None, "no word for 17 min")),
    ("silent is not said of a finished device", {"first_seen": NOW - 5000,
                                                 "last_seen": NOW - 5000, "phase": "done",
                                                 "result": "ok"}, ("installed", None, None)),
    ("nor of a failed one", {"first_seen": NOW - 5000, "last_seen": NOW - 5000,
                             "result": "fail", "message": "x"}, ("failed", None, "x")),
    ("conflict", {**SEEN, "phase": "done", "result": "ok", "reported_at": NOW - 50,
                  "conflict_at": NOW - 20, "conflicts": [{"fingerprint": "sha256:ab",
                                                          "note": "kept in RAM"}]},
     ("conflict", None, "a report signed by another key (sha256:ab) was refused: kept in RAM")),
    ("a good report after the conflict", {**SEEN, "phase": "done", "result": "ok",
                                          "reported_at": NOW - 5, "conflict_at": NOW - 20},
     ("installed", None, None)),
]


@pytest.mark.parametrize(("case", "row", "expected"), STATES, ids=[s[0] for s in STATES])
def test_state_derivation(case: str, row: dict[str, object],
                          expected: tuple[str, int | None, str | None]) -> None:
    state = derive(row, NOW, 900)
    assert (state.state, state.percent, state.reason) == expected


def test_a_short_silence_is_told_in_seconds() -> None:
    row = {**SEEN, "last_seen": NOW - 12.7}
    assert derive(row, NOW, 10) == State("silent", reason="no word for 12 s")
    assert derive(row, NOW, 13).state == "discovering"
    assert derive({**row, "last_seen": NOW - 60}, NOW, 10).reason == "no word for 1 min"


SIM = SimDevice("SN-1")


def report(phase: str, result: str, counter: int, **fields: str) -> Report:
    return parse_report(SIM.body(phase, result, counter=counter, **fields))


def test_events_lead_to_the_state(tmp_path: Path) -> None:
    """The store's writes, in order, and the state each leaves (through the database)."""
    store = StatusStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        device = store.find(Identity(serial="SN-1"), "sw1", listed=True)
        assert device is not None

        def state() -> tuple[str, int | None, str | None]:
            data = store.history("SN-1")
            assert data is not None
            found = data["device"]
            return found["state"], found["percent"], found["reason"]

        assert state() == ("discovering", None, None)
        store.not_found(device, "nos.bin", "/onie-installer")
        assert state() == ("failed", None, "installer nos.bin missing on the server (404)")
        store.start_download(device, "nos.bin", 1000, 0)
        store.add_bytes(device, 250)
        store.finish_download(device, complete=False)
        assert state() == ("downloading", 25, None)
        resumed = store.find(Identity(serial="SN-1"), listed=True)
        assert resumed is not None
        store.start_download(resumed, "nos.bin", 1000, 250)
        store.add_bytes(resumed, 750)
        store.finish_download(resumed, complete=True)
        assert state() == ("installing", None, None)
        store.report(resumed, report("install", "fail", 1, message="no disk"))
        assert state() == ("failed", None, "no disk")
        store.report(resumed, report("done", "ok", 2))
        assert state() == ("installed", None, None)
        data = store.history("SN-1")
        assert data is not None
        kinds = [(e["source"], e["kind"], e["result"]) for e in data["events"]]
        assert kinds == [("server", "not-found", None), ("server", "download", "running"),
                         ("server", "download", "stopped"), ("server", "download", "running"),
                         ("server", "download", "ok"), ("device", "report", "fail"),
                         ("device", "report", "ok")]
        assert data["device"]["bytes_sent"] == 1000 and data["device"]["downloads"] == 1
        assert store.counts()["installed"] == 1
        assert store.history("SN-NONE") is None
    finally:
        store.close()


def test_an_empty_database_is_migrated_to_the_newest_schema(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert migrate.current(db) is None
        migrate.upgrade(db)
        assert migrate.current(db) == migrate.head() == "0002"
        check_matches_schema(db)
        migrate.upgrade(db)  # a second start changes nothing
        assert migrate.current(db) == "0002"
    finally:
        db.close()


def test_a_database_at_the_first_version_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        migrate.upgrade(db, "0001")
        assert "ix_events_device_id" not in {i["name"] for i in inspect(db.engine).get_indexes("events")}
        with db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO keys (device, serial, mac, key, keystore, counter, registered) "
                "VALUES ('SN-OLD', 'SN-OLD', NULL, 'K', 'disk', 7, 1.0)"))
        migrate.upgrade(db)
        assert migrate.current(db) == "0002"
        check_matches_schema(db)
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT counter FROM keys WHERE device = 'SN-OLD'")).scalar() == 7
    finally:
        db.close()


def check_matches_schema(db: Database) -> None:
    """The migrated tables have the columns and indexes builder/factory/db/schema.py says."""
    found = inspect(db.engine)
    for table in metadata.sorted_tables:
        assert [c["name"] for c in found.get_columns(table.name)] == [c.name for c in table.columns]
        assert {i["name"] for i in found.get_indexes(table.name)} >= {
            i.name for i in table.indexes if i.name and not i.name.startswith("ix_devices_")
            and not i.name.startswith("ix_keys_")}


def test_the_database_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with db.atomic() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        db.close()


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://onie@db.example/factory", "postgresql+psycopg://onie@db.example/factory"),
    ("postgresql+psycopg://onie:pw@127.0.0.1:5433/f", "postgresql+psycopg://onie:pw@127.0.0.1:5433/f"),
    ("sqlite:///state.db", "sqlite:///{base}/state.db"),
    ("sqlite:////var/lib/onie/state.db", "sqlite:////var/lib/onie/state.db"),
])
def test_database_urls(tmp_path: Path, url: str, expected: str) -> None:
    assert normalize_url(url, tmp_path) == expected.format(base=tmp_path.resolve())


@pytest.mark.parametrize("url", ["mysql://x@y/z", "not a url", "sqlite://"])
def test_unsupported_database_urls(url: str) -> None:
    with pytest.raises(BuildError, match="database: "):
        normalize_url(url)


def test_device_json_has_the_interface_fields() -> None:
    out = Device("SN-1", serial="SN-1", listed=True, name="sw1").as_dict(NOW)
    assert {"key", "name", "listed", "serial", "mac", "platform", "address", "state", "percent",
            "reason", "first_seen", "last_seen"} <= set(out)
    assert (out["state"], out["first_seen"], out["percent"]) == ("waiting", None, None)


def test_download_progress_is_written_every_few_seconds_not_per_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.factory import status

    monkeypatch.setattr(status, "PROGRESS_SECONDS", 3600.0)  # however slow this machine is
    store = StatusStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        device = store.find(Identity(serial="SN-2"), listed=True)
        assert device is not None
        store.start_download(device, "nos.bin", 4096 * 1000, 0)
        for _ in range(500):
            store.add_bytes(device, 4096)
        # Not written yet, but shown: this server's running download is laid over the row.
        running = store.history("SN-2")
        assert running is not None
        assert (running["device"]["state"], running["device"]["percent"]) == ("downloading", 50)
        assert running["device"]["bytes_sent"] == 4096 * 500
        for _ in range(500):
            store.add_bytes(device, 4096)
        store.finish_download(device, complete=True)
        done = store.history("SN-2")
        assert done is not None
        downloads = [(e["result"], e["bytes"]) for e in done["events"] if e["kind"] == "download"]
        assert downloads == [("running", 0), ("ok", 4096 * 1000)]  # 1,000 chunks, 2 events
        assert done["device"]["bytes_sent"] == 4096 * 1000 and done["device"]["downloads"] == 1
        # Past PROGRESS_SECONDS, the next chunk writes a progress event.
        monkeypatch.setattr(status, "PROGRESS_SECONDS", 0.0)
        store.start_download(device, "nos.bin", 4096 * 1000, 0)
        store.add_bytes(device, 4096)
        store.add_bytes(device, 4096)
        again = store.history("SN-2")
        assert again is not None
        assert [(e["result"], e["bytes"]) for e in again["events"][-3:]] == [
            ("running", 0), ("running", 4096), ("running", 8192)]
        store.finish_download(device, complete=False)
    finally:
        store.close()


def test_one_bad_journal_operation_loses_only_itself(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy import Connection

    from builder.factory.db.journal import Journal

    db = Database(f"sqlite:///{tmp_path / 'state.db'}")
    migrate.upgrade(db)
    journal = Journal(db)

    def good(conn: Connection) -> None:
        conn.execute(text("INSERT INTO keys VALUES ('A', 'A', NULL, 'K', 'disk', 1, 1.0)"))

    def bad(conn: Connection) -> None:
        conn.execute(text("INSERT INTO nowhere VALUES (1)"))

    try:
        journal.put(bad)
        journal.put(good)  # in the same batch or the next: written either way
        assert journal.sync()
        with db.read() as conn:
            assert conn.execute(text("SELECT device FROM keys")).scalars().all() == ["A"]
        assert re.search(r"1 of [12] server events not written: no such table", caplog.text)
    finally:
        journal.close()
        db.close()
