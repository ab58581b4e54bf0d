"""The tables (SQLAlchemy Core): one row per device, one per event (its history), one per
registered device key. Alembic's scripts in ``migrations/versions`` make the same tables;
``tests/test_state_db.py`` checks that a migrated database matches these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

devices = Table(
    "devices", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),  # serial, else MAC
    Column("serial", String(64), unique=True),
    Column("mac", String(17), index=True),
    Column("platform", String(128)),
    Column("address", String(64)),
    Column("name", String(128)),
    Column("listed", Boolean, nullable=False, default=False),
    Column("requests", Integer, nullable=False, default=0),
    Column("last_path", String(200)),
    Column("installer", String(255)),
    Column("size", BigInteger, nullable=False, default=0),
    Column("bytes_sent", BigInteger, nullable=False, default=0),
    Column("progress", BigInteger, nullable=False, default=0),  # end of the current download
    Column("downloads", Integer, nullable=False, default=0),
    Column("phase", String(32), nullable=False, default="discovery"),
    Column("result", String(16), nullable=False, default="running"),
    Column("message", Text),
    Column("failure", Text),  # the server's own cause of a failure (a missing installer)
    Column("version", Text),
    Column("fingerprint", String(80)),
    Column("keystore", String(8)),
    Column("counter", BigInteger, nullable=False, default=0),
    Column("conflicts", JSON, nullable=False, default=list),
    Column("phases", JSON, nullable=False, default=list),
    Column("log", Text, nullable=False, default=""),
    Column("first_seen", Float),
    Column("last_seen", Float),
    Column("reported_at", Float),  # the last accepted report
    Column("conflict_at", Float),  # the last report signed by another key
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("time", Float, nullable=False),
    Column("source", String(8), nullable=False),  # server | device
    Column("kind", String(16), nullable=False),  # request | download | report | conflict | not-found
    Column("phase", String(32)),
    Column("result", String(16)),
    Column("message", Text),
    Column("path", String(200)),
    Column("status", Integer),
    Column("bytes", BigInteger),
    Column("size", BigInteger),
    Index("ix_events_device_id", "device_id", "id"),
)

keys = Table(
    "keys", metadata,
    Column("device", String(64), primary_key=True),  # serial, else MAC: decided on first use
    Column("serial", String(64), unique=True),
    Column("mac", String(17), index=True),
    Column("key", Text, nullable=False),
    Column("keystore", String(8), nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("registered", Float, nullable=False),
)
