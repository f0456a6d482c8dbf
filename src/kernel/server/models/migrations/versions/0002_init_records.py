"""Init script records per server; TLS fingerprint pinning of agents.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.add_column(sa.Column("tls_fingerprint", sa.String(64)))
    op.create_table(
        "init_records",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("server_id", sa.Integer, nullable=False),
        sa.Column("script", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_init_records"),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name="fk_init_records_server_id_servers"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_init_records_job_id_jobs", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_init_records_server_id", "init_records", ["server_id"])


def downgrade() -> None:
    op.drop_table("init_records")
    with op.batch_alter_table("servers") as batch:
        batch.drop_column("tls_fingerprint")
