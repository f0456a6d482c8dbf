"""Schedules (issue 13): schedules and their firings, one row per claimed planned time
(unique per schedule); files uploaded for pushes to servers.

Revision ID: 0005
Revises: 0006 (made from 0004 beside alerts' 0006 and replicas' 0007; chained after them at
the merge: 0004 → 0007 → 0006 → 0005)
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("cmd", sa.Text, nullable=False),
        sa.Column("stdin", sa.Text),
        sa.Column("env", sa.JSON, nullable=False),
        sa.Column("cwd", sa.String(1024)),
        sa.Column("timeout", sa.Float, nullable=False),
        sa.Column("targets", sa.JSON, nullable=False),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("skip_if_running", sa.Boolean, nullable=False),
        sa.Column("missed", sa.String(16), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True)),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
    )
    op.create_index("ix_schedules_next_at", "schedules", ["next_at"])
    op.create_table(
        "schedule_firings",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("schedule_id", sa.Integer, nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("note", sa.Text),
        sa.Column("missed_count", sa.Integer, nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_firings"),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name="fk_schedule_firings_schedule_id_schedules",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name="fk_schedule_firings_job_id_jobs",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint("schedule_id", "planned_at", name="uq_schedule_firings_schedule_id"),
    )
    op.create_index("ix_schedule_firings_schedule_id", "schedule_firings", ["schedule_id"])
    op.create_index("ix_schedule_firings_job_id", "schedule_firings", ["job_id"])
    op.create_table(
        "file_uploads",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_file_uploads"),
    )
    op.create_index("ix_file_uploads_expires_at", "file_uploads", ["expires_at"])


def downgrade() -> None:
    op.drop_table("file_uploads")
    op.drop_table("schedule_firings")
    op.drop_table("schedules")
