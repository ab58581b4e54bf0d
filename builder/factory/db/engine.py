"""Opening the database a URL names, and one transaction per thread.

SQLite (the default: ``<site-file-stem>.db`` beside the site file) runs in WAL mode with
``synchronous=FULL``, so a committed transaction survives a power cut, not only a ``kill -9``;
every write transaction starts with ``BEGIN IMMEDIATE`` (one writer at a time, waiting up to
``BUSY_SECONDS`` rather than failing). PostgreSQL URLs go through psycopg 3.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from builder.errors import BuildError

BUSY_SECONDS = 30


def default_url(site_path: Path) -> str:
    """The SQLite file beside the site file: ``<stem>.db``."""
    return f"sqlite:///{site_path.resolve().with_suffix('.db')}"


def normalize_url(url: str, base: Path | None = None) -> str:
    """``url`` with psycopg 3 as PostgreSQL's driver and a relative SQLite path made relative
    to ``base`` (the site file's folder); BuildError for other databases."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BuildError(f"database: not a database URL: {url!r}",
                         hint="sqlite:///PATH or postgresql://USER@HOST[:PORT]/NAME") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if not path.is_absolute() and base is not None:
            path = base / path
        return f"sqlite:///{path.resolve()}"
    raise BuildError(f"database: {backend!r} is not supported",
                     hint="sqlite:///PATH (one server) or postgresql://USER@HOST[:PORT]/NAME")


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """An engine for ``url`` (already normalized), with SQLite's settings on every connection;
    a SQLite ``writer`` takes the write lock when a transaction begins, a reader does not."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    engine = create_engine(url, connect_args={"timeout": BUSY_SECONDS, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                       f"busy_timeout={BUSY_SECONDS * 1000}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


class Database:
    """An engine and, per thread, the transaction ``atomic`` opened (nested calls join it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.reader = make_engine(url, writer=False) if self.backend == "sqlite" else self.engine
        self._local = threading.local()

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def atomic(self) -> Iterator[Connection]:
        """The thread's current transaction, else a new one committed when the block ends."""
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self.engine.begin() as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """The thread's current transaction, else a read-only one (SQLite: no write lock)."""
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        with self.reader.connect() as conn:
            yield conn
            conn.rollback()

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()
        self.reader.dispose()


def describe(exc: SQLAlchemyError) -> str:
    """One line about a database error, without SQL or parameters."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
