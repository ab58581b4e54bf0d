"""Alembic's environment: migrations run on the connection ``builder.factory.db.migrate``
hands over (never from a URL in an ini file)."""

from alembic import context
from sqlalchemy import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through builder.factory.db.migrate.upgrade")
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
