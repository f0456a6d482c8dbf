"""Alerts (issue 13): rules, channels, alerts, their notifications and delivery attempts, the
units seen active; an index on jobs.finished_at for the job rules.

Revision ID: 0006
Revises: 0007 (another helper adds 0005 from 0004; the lead re-chains)
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0007"
branch_labels = None
depends_on = None

LIVE = sa.text("resolved_at IS NULL")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("channels", sa.JSON),
        sa.Column("hold_open", sa.Float, nullable=False),
        sa.Column("hold_resolve", sa.Float, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.UniqueConstraint("name", name="uq_alert_rules_name"),
    )
    op.create_table(
        "alert_channels",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("url", sa.String(4096), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_channels"),
        sa.UniqueConstraint("name", name="uq_alert_channels_name"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.Integer),
        sa.Column("rule_name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("server_id", sa.Integer),
        sa.Column("server_name", sa.String(64)),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("since", WHEN, nullable=False),
        sa.Column("opened_at", WHEN),
        sa.Column("clear_since", WHEN),
        sa.Column("resolved_at", WHEN),
        sa.Column("resolution", sa.String(64)),
        sa.Column("last_seen_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rules.id"], name="fk_alerts_rule_id_alert_rules",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(["server_id"], ["servers.id"], name="fk_alerts_server_id_servers"),
    )  # fmt: skip
    op.create_index(
        "uq_alerts_live_key", "alerts", ["key"], unique=True,
        sqlite_where=LIVE, postgresql_where=LIVE,
    )  # fmt: skip
    op.create_index("ix_alerts_state", "alerts", ["state"])
    for column in ("rule_id", "server_id", "resolved_at"):
        op.create_index(f"ix_alerts_{column}", "alerts", [column])
    op.create_table(
        "alert_notifications",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("alert_id", sa.Integer),
        sa.Column("channel_id", sa.Integer),
        sa.Column("channel_name", sa.String(64), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("batch", sa.String(32), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", WHEN, nullable=False),
        sa.Column("claimed_at", WHEN),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("done_at", WHEN),
        sa.PrimaryKeyConstraint("id", name="pk_alert_notifications"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_alert_notifications_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["alert_channels.id"],
            name="fk_alert_notifications_channel_id_alert_channels", ondelete="SET NULL",
        ),
    )  # fmt: skip
    op.create_index(
        "ix_alert_notifications_state_next", "alert_notifications", ["state", "next_at"]
    )
    for column in ("alert_id", "channel_id"):
        op.create_index(f"ix_alert_notifications_{column}", "alert_notifications", [column])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("notification_id", sa.Integer, nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("duration", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
        sa.ForeignKeyConstraint(
            ["notification_id"], ["alert_notifications.id"],
            name="fk_alert_deliveries_notification_id_alert_notifications", ondelete="CASCADE",
        ),
    )  # fmt: skip
    op.create_index("ix_alert_deliveries_notification_id", "alert_deliveries", ["notification_id"])
    op.create_table(
        "alert_units",
        sa.Column("server_id", sa.Integer, nullable=False),
        sa.Column("unit", sa.String(255), nullable=False),
        sa.Column("active_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("server_id", "unit", name="pk_alert_units"),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name="fk_alert_units_server_id_servers",
            ondelete="CASCADE",
        ),
    )  # fmt: skip
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", "jobs")
    for table in ("alert_units", "alert_deliveries", "alert_notifications", "alerts"):
        op.drop_table(table)
    op.drop_table("alert_channels")
    op.drop_table("alert_rules")
