"""Versioned schema migrations with Alembic; its scripts are package data in ``migrations/``.

``upgrade`` brings a database to ``head`` (an empty one is created) when ``serve`` starts.
Several servers may start at once against one PostgreSQL database: the upgrade holds an
advisory lock, so one migrates and the others find it done. SQLite's ``BEGIN IMMEDIATE``
does the same for a file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from builder.factory.db.engine import Database

log = logging.getLogger(__name__)
SCRIPTS = Path(__file__).parent / "migrations"
LOCK_ID = 0x0E1E_B019  # pg_advisory_xact_lock key: "serve migrates"


def alembic_config() -> Config:
    """Alembic's configuration without an ini file: the scripts folder of the package."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    return config


def head() -> str:
    """The newest revision the scripts know."""
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert found is not None
    return found


def current(db: Database) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Migrate ``db`` to ``revision`` in one transaction."""
    config = alembic_config()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin lines; ours below
    with db.engine.begin() as conn:
        if db.backend == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        before = MigrationContext.configure(conn).get_current_revision()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        log.info("state database %s: schema %s -> %s", db.engine.url.render_as_string(),
                 before or "(empty)", after)
