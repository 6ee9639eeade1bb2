"""Time as JupyterHub's database keeps it: naive datetimes in UTC, one way for every service.

Times from the hub's API, from our tables and from the clock then compare and subtract
directly. Zones are added only where a time leaves us: :func:`as_utc` for JSON answers
(``…+00:00``) and for the culler's timezone-aware columns. APScheduler, a library that wants
aware times, keeps its own (``common.scheduler``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    """Now, naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def parse_time(value: str | None) -> datetime | None:
    """The hub's ISO 8601 timestamp (``2026-11-22T04:00:00.123Z``) as naive UTC."""
    if not value:
        return None
    when = datetime.fromisoformat(value)
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A naive UTC time (as stored, as SQLite hands it back) made aware, for JSON answers
    and timezone-aware columns; an aware one as it is."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
