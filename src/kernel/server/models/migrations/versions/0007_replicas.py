"""Replicas: their heartbeats, each run's owner, bulky live events by reference, and the checks
that every replica holds the installation's keys.

Revision ID: 0007
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replicas"),
    )
    op.create_index("ix_replicas_seen_at", "replicas", ["seen_at"])
    op.create_table(
        "event_payloads",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_payloads"),
    )
    op.create_index("ix_event_payloads_created_at", "event_payloads", ["created_at"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(36)))
        batch.create_index("ix_runs_owner", ["owner"])
    with op.batch_alter_table("installation") as batch:
        batch.add_column(sa.Column("seal_check", sa.Text))
        batch.add_column(sa.Column("secret_check", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("installation") as batch:
        batch.drop_column("secret_check")
        batch.drop_column("seal_check")
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_owner")
        batch.drop_column("owner")
    op.drop_table("event_payloads")
    op.drop_table("replicas")
