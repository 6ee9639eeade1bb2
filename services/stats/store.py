"""The stats tables' reads and writes; the decisions come from :mod:`.logic`.

Methods are synchronous (the poller runs them in a thread, so scrapes are answered meanwhile)
and each is one transaction: a failed poll leaves the stored history as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    MetaData,
    Table,
    delete,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from ..common.db import Database
from . import logic
from .logic import (
    DAY,
    DayUsage,
    HubSnapshot,
    LiveServer,
    OpenSession,
    SessionChanges,
    SessionSpan,
    UsageQuery,
    UserUsage,
)
from .models import ActivityBucket, DailyUsage, GroupMembership, Meta, ServerSession

ROLLED_UNTIL = "rolled_until"
#: The cull service's audit table, shown on the dashboard when it shares our database.
CULLS_TABLE = "culls"
#: Its columns the dashboard shows, when present (else all of them).
CULL_COLUMNS = ("at", "kind", "user", "server", "reason", "outcome")
#: Rows per IN (...) list, well below the bind-parameter limits of SQLite and PostgreSQL.
CHUNK = 500
#: Dashboard ranges: name -> (length, step).
RANGES = {
    "day": (timedelta(days=1), timedelta(minutes=15)),
    "week": (timedelta(days=7), timedelta(hours=1)),
    "semester": (timedelta(days=182), DAY),
}


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


@dataclass
class StoredState:
    """What the poller keeps in memory between polls, loaded from the tables on start."""

    open_sessions: dict[tuple[str, str], OpenSession]
    recorded_buckets: dict[str, datetime]
    open_memberships: set[tuple[str, str]]


class StatsStore:
    """Reads and writes the stats tables of one database."""

    def __init__(
        self, db: Database, *, bucket_seconds: int, retention: timedelta | None = None
    ) -> None:
        self.db = db
        self.bucket_seconds = bucket_seconds
        self.retention = retention

    # -- the poller's writes ------------------------------------------------------------------

    def load_state(self) -> StoredState:
        """Open sessions, each user's latest activity bucket and open group memberships."""
        with self.db.session() as session:
            rows = session.scalars(select(ServerSession).where(ServerSession.ended.is_(None)))
            open_sessions = {(r.user, r.server): _open(r) for r in rows}
            buckets = session.execute(
                select(ActivityBucket.user, func.max(ActivityBucket.bucket)).group_by(
                    ActivityBucket.user
                )
            )
            memberships = session.execute(
                select(GroupMembership.group, GroupMembership.user).where(
                    GroupMembership.left.is_(None)
                )
            )
            return StoredState(
                open_sessions,
                {user: bucket for user, bucket in buckets},
                {(group, user) for group, user in memberships},
            )

    def apply(
        self,
        snapshot: HubSnapshot,
        changes: SessionChanges,
        buckets: dict[str, datetime],
        joined: Iterable[tuple[str, str]],
        left: Iterable[tuple[str, str]],
    ) -> list[OpenSession]:
        """Store one poll's changes; return the sessions it opened (with their ids)."""
        now = snapshot.taken
        with self.db.session() as session:
            if changes.closed:
                session.execute(
                    update(ServerSession),
                    [
                        {"id": c.session.id, "ended": c.ended, "end_reason": c.reason}
                        for c in changes.closed
                    ],
                )
            if changes.moved:
                session.execute(
                    update(ServerSession),
                    [{"id": s.id, "last_activity": t} for s, t in changes.moved],
                )
            opened = self._open_sessions(session, changes.opened, now)
            session.execute(
                update(ServerSession).where(ServerSession.ended.is_(None)).values(last_seen=now)
            )
            if buckets:
                session.execute(
                    insert(ActivityBucket),
                    [{"user": u, "bucket": b} for u, b in buckets.items()],
                )
            session.add_all(GroupMembership(group=g, user=u, joined=now) for g, u in joined)
            for group, user in left:
                session.execute(
                    update(GroupMembership)
                    .where(
                        GroupMembership.group == group,
                        GroupMembership.user == user,
                        GroupMembership.left.is_(None),
                    )
                    .values(left=now)
                )
        return opened

    def _open_sessions(
        self, session: Session, servers: list[LiveServer], now: datetime
    ) -> list[OpenSession]:
        """Insert new runs; a run stored as ended but live again is reopened, not duplicated."""
        if not servers:
            return []
        earliest = min(s.started for s in servers if s.started is not None)
        ended: dict[tuple[str, str], list[ServerSession]] = {}
        users = sorted({s.user for s in servers})
        for chunk in _chunks(users):
            for stored in session.scalars(
                select(ServerSession).where(
                    ServerSession.user.in_(chunk),
                    ServerSession.started >= earliest - timedelta(seconds=1),
                    ServerSession.ended.is_not(None),
                )
            ):
                ended.setdefault((stored.user, stored.server), []).append(stored)
        rows = []
        for server in servers:
            assert server.started is not None  # reconcile_sessions opens only started runs
            row: ServerSession | None = next(
                (
                    r
                    for r in ended.get((server.user, server.server), [])
                    if abs((r.started - server.started).total_seconds()) < 1
                ),
                None,
            )
            if row is None:
                row = ServerSession(user=server.user, server=server.server, started=server.started)
                session.add(row)
            row.ended = row.end_reason = None
            row.last_activity = server.last_activity
            row.last_seen = now
            rows.append(row)
        session.flush()
        return [_open(r) for r in rows]

    # -- roll-up and retention ----------------------------------------------------------------

    def roll_up(self, now: datetime) -> int:
        """Store the daily usage of every finished day not rolled up yet; prune old raw rows.

        Returns the number of days rolled up. Raw rows are deleted only for days already
        rolled up and older than the retention, so the daily totals never lose data.
        """
        today = logic.day_start(now)
        with self.db.session() as session:
            meta = session.get(Meta, ROLLED_UNTIL)
            if meta is None:
                first = session.scalar(select(func.min(ServerSession.started)))
                first_bucket = session.scalar(select(func.min(ActivityBucket.bucket)))
                starts = [t for t in (first, first_bucket) if t is not None]
                meta = Meta(
                    key=ROLLED_UNTIL, value=logic.day_start(min(starts, default=now)).isoformat()
                )
                session.add(meta)
            day = datetime.fromisoformat(meta.value)
            days = 0
            while day < today:
                usage = self._day_usage(session, day, day + DAY, now)[day]
                session.execute(delete(DailyUsage).where(DailyUsage.day == day))
                if usage:
                    session.execute(
                        insert(DailyUsage),
                        [
                            {
                                "day": day,
                                "user": user,
                                "sessions": u.sessions,
                                "server_seconds": u.server_seconds,
                                "active_seconds": u.active_seconds,
                            }
                            for user, u in usage.items()
                        ],
                    )
                day += DAY
                days += 1
            meta.value = day.isoformat()
            if self.retention is not None:
                cutoff = min(day, today - self.retention)
                session.execute(delete(ActivityBucket).where(ActivityBucket.bucket < cutoff))
                session.execute(delete(ServerSession).where(ServerSession.ended < cutoff))
        return days

    def rolled_until(self, session: Session, now: datetime) -> datetime:
        """Days before this one are in the daily table; from it on, computed from raw rows."""
        meta = session.get(Meta, ROLLED_UNTIL)
        return datetime.fromisoformat(meta.value) if meta else logic.day_start(now)

    def _day_usage(
        self, session: Session, start: datetime, end: datetime, now: datetime
    ) -> dict[datetime, dict[str, DayUsage]]:
        """Daily usage per user for each day in [start, end), from sessions and buckets."""
        spans = self._spans(session, start, end)
        buckets = session.execute(
            select(ActivityBucket.user, ActivityBucket.bucket).where(
                ActivityBucket.bucket >= start, ActivityBucket.bucket < end
            )
        ).all()
        result = {}
        day = start
        while day < end:
            result[day] = logic.daily_usage(day, spans, buckets, self.bucket_seconds, now)
            day += DAY
        return result

    def _spans(
        self, session: Session, start: datetime, end: datetime, user: str | None = None
    ) -> list[SessionSpan]:
        """Sessions that ran at some time in [start, end)."""
        query = select(ServerSession.user, ServerSession.started, ServerSession.ended).where(
            ServerSession.started < end,
            or_(ServerSession.ended.is_(None), ServerSession.ended > start),
        )
        if user is not None:
            query = query.where(ServerSession.user == user)
        return [SessionSpan(*row) for row in session.execute(query)]

    # -- reports ------------------------------------------------------------------------------

    def usage(self, query: UsageQuery, now: datetime) -> list[UserUsage]:
        """The usage report: rolled-up days from the daily table, later days from raw rows.

        With ``group``, a user's day counts only if they were in the group that day.
        """
        with self.db.session() as session:
            split = min(max(self.rolled_until(session, now), query.start), query.end)
            members = None
            if query.group is not None:
                members = self._memberships(session, query.group)
            rows: list[UserUsage] = []
            if query.start < split:
                rows += self._rolled_usage(session, query, split)
            live_end = min(query.end, logic.day_start(now) + DAY)
            if split < live_end:
                for day, per_user in self._day_usage(session, split, live_end, now).items():
                    rows += [
                        r
                        for r in logic.usage_from_day(per_user)
                        if (query.user is None or r.user == query.user)
                        and (members is None or _member_on(members, r.user, day))
                    ]
            return logic.merge_usage(rows)

    def _rolled_usage(self, session: Session, query: UsageQuery, end: datetime) -> list[UserUsage]:
        filters: list[ColumnElement[bool]] = [DailyUsage.day >= query.start, DailyUsage.day < end]
        if query.user is not None:
            filters.append(DailyUsage.user == query.user)
        if query.group is not None:
            # A semi-join on the memberships, so the statement's size does not grow with the
            # group's (one OR term per membership failed at about 1,000 on SQLite), and a day
            # counts once however many of the user's memberships it overlaps. Membership is
            # kept per day: the days a member was in the group at some time, as _member_on.
            filters.append(
                exists().where(
                    GroupMembership.group == query.group,
                    GroupMembership.user == DailyUsage.user,
                    DailyUsage.day >= func.date(GroupMembership.joined),
                    or_(GroupMembership.left.is_(None), DailyUsage.day < GroupMembership.left),
                )
            )
        result = session.execute(
            select(
                DailyUsage.user,
                func.sum(DailyUsage.sessions),
                func.sum(DailyUsage.server_seconds),
                func.sum(DailyUsage.active_seconds),
                func.count(),
            )
            .where(*filters)
            .group_by(DailyUsage.user)
        )
        return [
            UserUsage(user, int(n), float(server) / 3600, float(active) / 3600, int(days))
            for user, n, server, active, days in result
        ]

    def _memberships(
        self, session: Session, group: str
    ) -> dict[str, list[tuple[datetime, datetime | None]]]:
        members: dict[str, list[tuple[datetime, datetime | None]]] = {}
        for user, joined, left in session.execute(
            select(GroupMembership.user, GroupMembership.joined, GroupMembership.left).where(
                GroupMembership.group == group
            )
        ):
            members.setdefault(user, []).append((joined, left))
        return members

    def user_sessions(self, user: str, limit: int = 1000) -> list[dict[str, Any]]:
        """A user's sessions, newest first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(ServerSession)
                .where(ServerSession.user == user)
                .order_by(ServerSession.started.desc())
                .limit(limit)
            )
            return [
                {
                    "server": r.server,
                    "started": logic.iso(r.started),
                    "ended": logic.iso(r.ended),
                    "end_reason": r.end_reason,
                    "last_activity": logic.iso(r.last_activity),
                }
                for r in rows
            ]

    def known_user(self, user: str) -> bool:
        """Whether the history mentions ``user`` at all."""
        with self.db.session() as session:
            return any(
                session.scalar(select(model.user).where(model.user == user).limit(1)) is not None
                for model in (ServerSession, DailyUsage, ActivityBucket)
            )

    # -- dashboard ----------------------------------------------------------------------------

    def dashboard(self, range_name: str, now: datetime, top: int = 20) -> dict[str, Any]:
        """Everything the dashboard draws for one range, in one JSON-able dict."""
        length, step = RANGES[range_name]
        start = logic.floor_time(now - length, int(step.total_seconds())) + step
        end = logic.floor_time(now, int(step.total_seconds())) + step
        with self.db.session() as session:
            if step < DAY:
                spans = self._spans(session, start, end)
                buckets = session.execute(
                    select(ActivityBucket.user, ActivityBucket.bucket).where(
                        ActivityBucket.bucket >= start, ActivityBucket.bucket < end
                    )
                ).all()
                series = logic.time_series(start, end, step, spans, buckets, now)
            else:
                series = self._daily_series(session, start, end, now)
            durations = [
                (ended - started).total_seconds()
                for started, ended in session.execute(
                    select(ServerSession.started, ServerSession.ended).where(
                        ServerSession.ended >= start
                    )
                )
                if ended is not None
            ]
            groups = session.execute(
                select(GroupMembership.group, func.count())
                .where(GroupMembership.left.is_(None))
                .group_by(GroupMembership.group)
                .order_by(func.count().desc(), GroupMembership.group)
                .limit(top)
            ).all()
        first_day, last_day = logic.day_start(start), logic.day_start(now) + DAY
        report = UsageQuery(first_day, last_day, None, None, "json")
        users = self.usage(report, now)[:top]
        group_rows = []
        for group, members in groups:
            rows = self.usage(UsageQuery(first_day, last_day, None, group, "json"), now)
            group_rows.append(
                {
                    "group": group,
                    "members": members,
                    "active_users": sum(1 for r in rows if r.active_hours > 0),
                    "server_hours": round(sum(r.server_hours for r in rows), 3),
                }
            )
        return {
            "range": range_name,
            "step_seconds": step.total_seconds(),
            "series": [
                {"t": logic.iso(t), "active_users": a, "running_servers": r} for t, a, r in series
            ],
            "users": [u.as_dict() for u in users],
            "groups": group_rows,
            "session_lengths": {
                "buckets": list(logic.DURATION_BUCKETS),
                "counts": logic.duration_histogram(durations),
            },
            "culls": self.recent_culls(),
        }

    def _daily_series(
        self, session: Session, start: datetime, end: datetime, now: datetime
    ) -> list[tuple[datetime, int, int]]:
        """Per day: users active, users with a running server (roll-ups, then raw rows)."""
        split = min(self.rolled_until(session, now), end)
        points: dict[datetime, tuple[int, int]] = {}
        for day, active, running in session.execute(
            select(
                DailyUsage.day,
                func.count().filter(DailyUsage.active_seconds > 0),
                func.count().filter(DailyUsage.server_seconds > 0),
            )
            .where(DailyUsage.day >= start, DailyUsage.day < split)
            .group_by(DailyUsage.day)
        ):
            points[day] = (active, running)
        for day, per_user in self._day_usage(session, max(split, start), end, now).items():
            points[day] = (
                sum(1 for u in per_user.values() if u.active_seconds > 0),
                sum(1 for u in per_user.values() if u.server_seconds > 0),
            )
        days = int((end - start) / DAY)
        return [(d, *points.get(d, (0, 0))) for d in (start + i * DAY for i in range(days))]

    def recent_culls(self, limit: int = 20) -> dict[str, Any] | None:
        """The cull service's latest audit rows if its table is in this database, else None."""
        if not inspect(self.db.engine).has_table(CULLS_TABLE):
            return None
        table = Table(CULLS_TABLE, MetaData(), autoload_with=self.db.engine)
        columns = [table.c[n] for n in CULL_COLUMNS if n in table.c] or list(table.columns)
        order = list(table.primary_key.columns) or columns[:1]
        with self.db.session() as session:
            rows = session.execute(
                select(*columns).order_by(*(c.desc() for c in order)).limit(limit)
            ).all()
        return {
            "columns": [c.name for c in columns],
            "rows": [[_jsonable(v) for v in row] for row in rows],
        }


def _open(row: ServerSession) -> OpenSession:
    return OpenSession(row.id, row.user, row.server, row.started, row.last_activity, row.last_seen)


def _member_on(
    members: dict[str, list[tuple[datetime, datetime | None]]], user: str, day: datetime
) -> bool:
    """Whether ``user`` was in the group at some time on ``day``."""
    return any(
        joined < day + DAY and (left is None or left > day)
        for joined, left in members.get(user, [])
    )


def _jsonable(value: Any) -> Any:
    """A cell of a table we do not know the schema of, as JSON."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
