"""The first schema: devices, their events, the key registry.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column("serial", sa.String(64), unique=True),
        sa.Column("mac", sa.String(17), index=True),
        sa.Column("platform", sa.String(128)),
        sa.Column("address", sa.String(64)),
        sa.Column("name", sa.String(128)),
        sa.Column("listed", sa.Boolean, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("last_path", sa.String(200)),
        sa.Column("installer", sa.String(255)),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("bytes_sent", sa.BigInteger, nullable=False),
        sa.Column("progress", sa.BigInteger, nullable=False),
        sa.Column("downloads", sa.Integer, nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("failure", sa.Text),
        sa.Column("version", sa.Text),
        sa.Column("fingerprint", sa.String(80)),
        sa.Column("keystore", sa.String(8)),
        sa.Column("counter", sa.BigInteger, nullable=False),
        sa.Column("conflicts", sa.JSON, nullable=False),
        sa.Column("phases", sa.JSON, nullable=False),
        sa.Column("log", sa.Text, nullable=False),
        sa.Column("first_seen", sa.Float),
        sa.Column("last_seen", sa.Float),
        sa.Column("reported_at", sa.Float),
        sa.Column("conflict_at", sa.Float),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.Integer, sa.ForeignKey("devices.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(32)),
        sa.Column("result", sa.String(16)),
        sa.Column("message", sa.Text),
        sa.Column("path", sa.String(200)),
        sa.Column("status", sa.Integer),
        sa.Column("bytes", sa.BigInteger),
        sa.Column("size", sa.BigInteger),
    )
    op.create_table(
        "keys",
        sa.Column("device", sa.String(64), primary_key=True),
        sa.Column("serial", sa.String(64), unique=True),
        sa.Column("mac", sa.String(17), index=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("keystore", sa.String(8), nullable=False),
        sa.Column("counter", sa.BigInteger, nullable=False),
        sa.Column("registered", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("keys")
    op.drop_table("events")
    op.drop_table("devices")
