"""Indexes for ranges: a user's days in the daily table, users per activity bucket.

The dashboard's group table joins memberships with the daily table on the user, for a range of
days: (user, day) reads only the range, where (user) read every day the user has; with the
values in the index, a year's report of every user reads the index alone, in user order.
Counting users per step of a range reads (bucket, user) alone, without the table. The
planners pick between (day, user) and (user, day, ...) by the table statistics, so they are
gathered here and after each roll-up (StatsStore.roll_up).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_index(
        "ix_stats_daily_user_day",
        "stats_daily",
        ["user", "day", "sessions", "server_seconds", "active_seconds"],
    )
    op.drop_index("ix_stats_daily_user", table_name="stats_daily")
    op.create_index("ix_stats_activity_bucket_user", "stats_activity", ["bucket", "user"])
    op.drop_index("ix_stats_activity_bucket", table_name="stats_activity")
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("PRAGMA analysis_limit = 1000")
    if dialect in ("sqlite", "postgresql"):
        for table in ("stats_daily", "stats_activity"):
            op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    op.create_index("ix_stats_activity_bucket", "stats_activity", ["bucket"])
    op.drop_index("ix_stats_activity_bucket_user", table_name="stats_activity")
    op.create_index("ix_stats_daily_user", "stats_daily", ["user"])
    op.drop_index("ix_stats_daily_user_day", table_name="stats_daily")
