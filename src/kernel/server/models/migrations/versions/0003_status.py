"""Status: each host's last probe and health; metrics history.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_status",
        sa.Column("server_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", sa.DateTime(timezone=True)),
        sa.Column("last_ok_at", sa.DateTime(timezone=True)),
        sa.Column("probed_at", sa.DateTime(timezone=True)),
        sa.Column("duration", sa.Float),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("units", sa.JSON, nullable=False),
        sa.Column("warnings", sa.JSON, nullable=False),
        sa.Column("cpu_total", sa.BigInteger),
        sa.Column("cpu_idle", sa.BigInteger),
        sa.PrimaryKeyConstraint("server_id", name="pk_host_status"),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name="fk_host_status_server_id_servers",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "metric_samples",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("server_id", sa.Integer, nullable=False),
        sa.Column("t", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("values", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metric_samples"),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name="fk_metric_samples_server_id_servers",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_metric_samples_server_t", "metric_samples", ["server_id", "t"])


def downgrade() -> None:
    op.drop_table("metric_samples")
    op.drop_table("host_status")
