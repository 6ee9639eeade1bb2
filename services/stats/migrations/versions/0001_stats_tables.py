"""Create the stats tables: sessions, activity buckets, daily roll-ups, group membership, meta.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "stats_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("started", sa.DateTime(), nullable=False),
        sa.Column("ended", sa.DateTime(), nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("last_activity", sa.DateTime(), nullable=True),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("user", "server", "started", name="uq_stats_sessions_run"),
    )
    op.create_index("ix_stats_sessions_open", "stats_sessions", ["ended"])
    op.create_index("ix_stats_sessions_user_started", "stats_sessions", ["user", "started"])
    op.create_table(
        "stats_activity",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("bucket", sa.DateTime(), primary_key=True),
    )
    op.create_index("ix_stats_activity_bucket", "stats_activity", ["bucket"])
    op.create_table(
        "stats_daily",
        sa.Column("day", sa.DateTime(), primary_key=True),
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.Column("server_seconds", sa.Float(), nullable=False),
        sa.Column("active_seconds", sa.Float(), nullable=False),
    )
    op.create_index("ix_stats_daily_user", "stats_daily", ["user"])
    op.create_table(
        "stats_group_membership",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("joined", sa.DateTime(), nullable=False),
        sa.Column("left", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_stats_group_membership_group", "stats_group_membership", ["group", "user"])
    op.create_table(
        "stats_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    for table in [
        "stats_meta",
        "stats_group_membership",
        "stats_daily",
        "stats_activity",
        "stats_sessions",
    ]:
        op.drop_table(table)
