"""Hardening (issue 9): server names unique whatever their case and trailing dots; agent keys
sealed at rest (a longer column: the sealed form; the values are sealed by the app at start,
which holds the key); login failures in the database; this installation's id.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LIVE = sa.text("removed_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.add_column(sa.Column("name_key", sa.String(64), nullable=True))
        batch.alter_column("agent_key", type_=sa.String(255), existing_nullable=False)
    op.execute("UPDATE servers SET name_key = lower(rtrim(name, '.'))")
    with op.batch_alter_table("servers") as batch:
        batch.alter_column("name_key", existing_type=sa.String(64), nullable=False)
        batch.drop_index("uq_servers_live_name")
        batch.create_index(
            "uq_servers_live_name_key",
            ["name_key"],
            unique=True,
            sqlite_where=LIVE,
            postgresql_where=LIVE,
        )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_login_failures"),
    )
    for column in ("name", "source", "at"):
        op.create_index(f"ix_login_failures_{column}", "login_failures", [column])
    op.create_table(
        "installation",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_installation"),
    )


def downgrade() -> None:
    op.drop_table("installation")
    op.drop_table("login_failures")
    with op.batch_alter_table("servers") as batch:
        batch.drop_index("uq_servers_live_name_key")
        batch.create_index(
            "uq_servers_live_name", ["name"], unique=True, sqlite_where=LIVE, postgresql_where=LIVE
        )
        batch.drop_column("name_key")
