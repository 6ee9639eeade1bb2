"""The stats tables. Times are naive UTC datetimes, the same on SQLite and PostgreSQL.

Table names start with ``stats_``: the database may be shared with the other services.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: JupyterHub limits neither user nor server names; 255 fits what authenticators produce.
NAME = String(255)


class Base(DeclarativeBase):
    pass


class ServerSession(Base):
    """One run of one server, from the hub's ``started`` until we saw it gone."""

    __tablename__ = "stats_sessions"
    __table_args__ = (
        # reconciling after a restart finds a run by these three; one row per run
        UniqueConstraint("user", "server", "started", name="uq_stats_sessions_run"),
        Index("ix_stats_sessions_open", "ended"),
        Index("ix_stats_sessions_user_started", "user", "started"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(NAME)
    server: Mapped[str] = mapped_column(NAME, default="")
    started: Mapped[datetime] = mapped_column(DateTime)
    ended: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: last poll that saw the server: bounds the end of a run that stopped while we were down
    last_seen: Mapped[datetime] = mapped_column(DateTime)


class ActivityBucket(Base):
    """A user was active (their last_activity moved) within this bucket."""

    __tablename__ = "stats_activity"
    # the dashboard counts users per step of a range from this index alone
    __table_args__ = (Index("ix_stats_activity_bucket_user", "bucket", "user"),)

    user: Mapped[str] = mapped_column(NAME, primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime, primary_key=True)


class DailyUsage(Base):
    """One user's usage on one UTC day, rolled up from sessions and activity buckets."""

    __tablename__ = "stats_daily"
    # A user's days in a range (group tables join memberships on the user), and every user's
    # sums over a long range read in user order from this index alone (it holds the values):
    # the primary key (day, user) serves short ranges of days for everyone.
    __table_args__ = (
        Index(
            "ix_stats_daily_user_day",
            "user",
            "day",
            "sessions",
            "server_seconds",
            "active_seconds",
        ),
    )

    day: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    user: Mapped[str] = mapped_column(NAME, primary_key=True)
    sessions: Mapped[int] = mapped_column(Integer, default=0)
    server_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    active_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class GroupMembership(Base):
    """A user was in a group from ``joined`` until ``left`` (open while still a member)."""

    __tablename__ = "stats_group_membership"
    __table_args__ = (Index("ix_stats_group_membership_group", "group", "user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group: Mapped[str] = mapped_column(NAME)
    user: Mapped[str] = mapped_column(NAME)
    joined: Mapped[datetime] = mapped_column(DateTime)
    left: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Meta(Base):
    """Small facts the service keeps between restarts, e.g. up to which day it rolled up."""

    __tablename__ = "stats_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
