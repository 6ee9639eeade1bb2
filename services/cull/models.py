"""The culler's audit trail: every cycle, every cull (or would-be cull) with its reason.

The stats service reads ``culls`` when it shares this database, so its name and columns are
an interface: change them only with a migration both services know.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Cycle(Base):
    """One pass over the hub's servers."""

    __tablename__ = "cull_cycles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dry_run: Mapped[bool] = mapped_column(default=False)
    examined: Mapped[int] = mapped_column(default=0)  # running servers looked at
    culled_servers: Mapped[int] = mapped_column(default=0)
    culled_users: Mapped[int] = mapped_column(default=0)
    kept_busy: Mapped[int] = mapped_column(default=0)
    errors: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)  # why the whole cycle failed, if it did


class Cull(Base):
    """A server stopped or a user removed (or, in a dry run, what would have been)."""

    __tablename__ = "culls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("cull_cycles.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "server" or "user"
    user: Mapped[str] = mapped_column(String(255), index=True)
    server: Mapped[str | None] = mapped_column(String(255))  # "" default server; None for users
    reason: Mapped[str] = mapped_column(String(16))  # policy.IDLE or policy.MAX_AGE
    why: Mapped[str] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(255))
    idle_seconds: Mapped[int | None] = mapped_column(Integer)
    age_seconds: Mapped[int | None] = mapped_column(Integer)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # or user created
    outcome: Mapped[str] = mapped_column(String(16))  # a cycle.Outcome value


class CullWarning(Base):
    """A warning sent before a cull, so each server run is warned once, across restarts."""

    __tablename__ = "cull_warnings"
    __table_args__ = (UniqueConstraint("user", "server", "started"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    server: Mapped[str] = mapped_column(String(255))
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    warned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CullExtension(Base):
    """A "keep it running" from a server's owner: counted per server run, limited by policy."""

    __tablename__ = "cull_extensions"
    __table_args__ = (Index("ix_cull_extensions_run", "user", "server", "started"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    server: Mapped[str] = mapped_column(String(255))
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
