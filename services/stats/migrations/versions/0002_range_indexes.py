"""Indexes for ranges: a user's days in the daily table, users per activity bucket.

The dashboard's group table joins memberships with the daily table on the user, for a range of
days: (user, day) reads only the range, where (user) read every day the user has. Counting
users per step of a range reads (bucket, user) alone, without the table.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_index("ix_stats_daily_user_day", "stats_daily", ["user", "day"])
    op.drop_index("ix_stats_daily_user", table_name="stats_daily")
    op.create_index("ix_stats_activity_bucket_user", "stats_activity", ["bucket", "user"])
    op.drop_index("ix_stats_activity_bucket", table_name="stats_activity")


def downgrade() -> None:
    op.create_index("ix_stats_activity_bucket", "stats_activity", ["bucket"])
    op.drop_index("ix_stats_activity_bucket_user", table_name="stats_activity")
    op.create_index("ix_stats_daily_user", "stats_daily", ["user"])
    op.drop_index("ix_stats_daily_user_day", table_name="stats_daily")
