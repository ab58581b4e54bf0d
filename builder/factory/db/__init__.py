"""The factory's state in a database (SQLAlchemy Core; SQLite by default, PostgreSQL to share
it between several ``serve`` instances): ``schema.py`` the tables, ``engine.py`` opening a URL
(SQLite's WAL and ``synchronous=FULL``, psycopg 3 for PostgreSQL) and one transaction per
thread, ``migrate.py`` Alembic's versioned migrations (scripts in ``migrations/``, package
data), ``journal.py`` the writer thread for the server's own events (requests, download
progress), ``devices.py`` the device rows and their events, ``keys.py`` the key registry
(trust on first use and replay protection, decided by the database). docs/factory.md,
"Database"."""
