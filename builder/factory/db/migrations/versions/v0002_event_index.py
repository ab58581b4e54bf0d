"""A device's history (``/status/<key>.json``: its last events, newest first) read through an
index instead of a scan of every event.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_device_id", "events", ["device_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_device_id", "events")
