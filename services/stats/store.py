"""The stats tables' reads and writes; the decisions come from :mod:`.logic`.

Methods are synchronous (the poller runs them in a thread, so scrapes are answered meanwhile)
and each is one transaction: a failed poll leaves the stored history as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Integer,
    MetaData,
    Row,
    SQLColumnExpression,
    Table,
    and_,
    case,
    delete,
    distinct,
    exists,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

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
#: Rows a report reads from the database at a time (a server-side cursor on PostgreSQL).
BATCH = 1000
#: Rolled-up rows of the top users' report the dashboard keeps per range.
ROLLED_PREFIX = 1000

T = TypeVar("T")
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
        # the dashboard's sums over rolled-up days, until a roll-up (or a write to the past)
        self._memos: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._memo_lock = threading.Lock()
        #: bumped when a write changes what happened before today (runs, activity): the
        #: dashboard's kept sums over earlier days hold only as long as it stays the same
        self.past_writes = 0
        #: bumped after each poll's writes commit: the raw rows of the live days the dashboard
        #: read hold as long as it stays the same
        self.writes = 0

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
        today = logic.day_start(now)
        past_writes = self.past_writes
        if (
            any(c.ended < today for c in changes.closed)
            or any(s.started is not None and s.started < today for s in changes.opened)
            or any(bucket < today for bucket in buckets.values())
        ):
            self.past_writes += 1  # a run or activity before today, first seen now
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
        if self.past_writes != past_writes:
            # again once committed: sums a dashboard computed meanwhile, from before the
            # commit, must not be kept under the new count either
            self.past_writes += 1
        self.writes += 1
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
            elif row.ended is not None and row.ended < logic.day_start(now):
                self.past_writes += 1  # reopened: it no longer ended before today
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
        if days:
            self._analyze()
        return days

    def _analyze(self) -> None:
        """Refresh the planner's statistics of the tables a day's roll-up grew: it picks the
        daily table's index for a range by them (PostgreSQL's autovacuum gets there too, but
        only after a tenth of a table changed). Both sample, so this is quick on large tables.
        Not the sessions: with statistics, SQLite reads a range's runs by (user, started) for
        every user instead of by ``ended``."""
        dialect = self.db.engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            return
        with self.db.engine.begin() as connection:
            if dialect == "sqlite":
                connection.exec_driver_sql("PRAGMA analysis_limit = 1000")
            for table in ("stats_daily", "stats_activity"):
                connection.exec_driver_sql(f"ANALYZE {table}")

    def rolled_until(self, session: Session, now: datetime) -> datetime:
        """Days before this one are in the daily table; from it on, computed from raw rows."""
        meta = session.get(Meta, ROLLED_UNTIL)
        return datetime.fromisoformat(meta.value) if meta else logic.day_start(now)

    def _day_usage(
        self, session: Session, start: datetime, end: datetime, now: datetime
    ) -> dict[datetime, dict[str, DayUsage]]:
        """Daily usage per user for each day in [start, end), from sessions and buckets."""
        return self._usage_by_day(start, end, *self._raw_rows(session, start, end), now)

    def _live_days(
        self, session: Session, start: datetime, end: datetime, now: datetime
    ) -> dict[datetime, dict[str, DayUsage]]:
        """:meth:`_day_usage` of the dashboard's live days. Their raw rows change only when a
        poll writes, so they are read once per poll (not once per request and range) and only
        the usage is computed again, up to ``now``."""
        rows = self._remember(
            "live_rows", (start, end, self.writes), lambda: self._raw_rows(session, start, end)
        )
        return self._usage_by_day(start, end, *rows, now)

    def _raw_rows(
        self, session: Session, start: datetime, end: datetime
    ) -> tuple[list[SessionSpan], Sequence[Row[str, datetime]]]:
        """The sessions that ran and the activity buckets in [start, end).

        Read through the session's connection (Core): a busy day has hundreds of thousands of
        buckets, which the ORM's row loading would take several times as long over."""
        buckets = (
            session.connection()
            .execute(
                select(ActivityBucket.user, ActivityBucket.bucket).where(
                    ActivityBucket.bucket >= start, ActivityBucket.bucket < end
                )
            )
            .all()
        )
        return self._spans(session, start, end), buckets

    def _usage_by_day(
        self,
        start: datetime,
        end: datetime,
        spans: list[SessionSpan],
        buckets: Sequence[Row[str, datetime]],
        now: datetime,
    ) -> dict[datetime, dict[str, DayUsage]]:
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
        return [SessionSpan(*row) for row in session.connection().execute(query)]

    # -- reports ------------------------------------------------------------------------------

    def usage(self, query: UsageQuery, now: datetime) -> list[UserUsage]:
        """The usage report as a list (small reports; exports stream :meth:`usage_rows`)."""
        with self.db.session() as session:
            return list(self._usage_rows(session, query, now))

    def usage_rows(self, query: UsageQuery, now: datetime) -> Generator[UserUsage, None, None]:
        """The usage report row by row, sorted by server hours, in one transaction.

        Rolled-up days come from the daily table, summed and sorted by the database and read in
        batches (a server-side cursor on PostgreSQL); the live days (not rolled up yet) are
        computed from raw rows. Only the users with live usage are held in memory, so an export
        of every user does not grow the service with the number of users. With ``group``, a
        user's day counts only if they were in the group that day.
        """
        with self.db.session() as session:
            yield from self._usage_rows(session, query, now)

    def _usage_rows(
        self, session: Session, query: UsageQuery, now: datetime
    ) -> Iterator[UserUsage]:
        split = min(max(self.rolled_until(session, now), query.start), query.end)
        live = self._live_rows(session, query, split, now)
        if query.start >= split:
            return logic.merge_sorted_usage([], live, {})
        return logic.merge_sorted_usage(
            self._rolled(session, query, split, ordered=True),
            live,
            self._rolled_of(session, query, split, live),
        )

    def _rolled_of(
        self, session: Session, query: UsageQuery, split: datetime, users: Iterable[str]
    ) -> dict[str, UserUsage]:
        """The rolled-up rows of ``users`` (those with live usage), a chunk of them a query."""
        return {
            row.user: row
            for chunk in _chunks(sorted(users))
            for row in self._rolled(session, query, split, users=chunk)
        }

    def _live_rows(
        self, session: Session, query: UsageQuery, split: datetime, now: datetime
    ) -> dict[str, list[UserUsage]]:
        """The report's rows of the days from ``split`` on (not rolled up yet), per user."""
        live_end = min(query.end, logic.day_start(now) + DAY)
        if split >= live_end:
            return {}
        members = self._memberships(session, query.group) if query.group is not None else None
        days = self._day_usage(session, split, live_end, now)
        return logic.live_rows(
            {
                day: {
                    user: u
                    for user, u in per_user.items()
                    if (query.user is None or user == query.user)
                    and (members is None or logic.member_on(members, user, day))
                }
                for day, per_user in days.items()
            }
        )

    def _rolled(
        self,
        session: Session,
        query: UsageQuery,
        end: datetime,
        *,
        ordered: bool = False,
        users: Sequence[str] | None = None,
    ) -> Generator[UserUsage, None, None]:
        """Per-user sums of the daily table from ``query.start`` to ``end``; ``ordered``: in the
        report's order, read in batches; ``users``: only these."""
        filters: list[ColumnElement[bool]] = [DailyUsage.day >= query.start, DailyUsage.day < end]
        if query.user is not None:
            filters.append(DailyUsage.user == query.user)
        if users is not None:
            filters.append(DailyUsage.user.in_(users))
        if query.group is not None:
            # the members' rows only (the index on (user, day)), then per day:
            members = select(GroupMembership.user).where(GroupMembership.group == query.group)
            filters.append(DailyUsage.user.in_(members))
            # A semi-join on the memberships, so the statement's size does not grow with the
            # group's (one OR term per membership failed at about 1,000 on SQLite), and a day
            # counts once however many of the user's memberships it overlaps.
            filters.append(
                exists().where(
                    GroupMembership.group == query.group,
                    GroupMembership.user == DailyUsage.user,
                    _member_that_day(DailyUsage.day),
                )
            )
        server = func.sum(DailyUsage.server_seconds)
        statement = (
            select(
                DailyUsage.user,
                func.sum(DailyUsage.sessions),
                server,
                func.sum(DailyUsage.active_seconds),
                func.count(),
            )
            .where(*filters)
            .group_by(DailyUsage.user)
        )
        if ordered:
            statement = statement.order_by(server.desc(), self._by_code_point(DailyUsage.user))
        result = session.execute(statement, execution_options={"yield_per": BATCH})
        for user, n, server_seconds, active, days in result:
            yield UserUsage(
                user, int(n), float(server_seconds) / 3600, float(active) / 3600, int(days)
            )

    def _by_code_point(self, column: SQLColumnExpression[str]) -> SQLColumnExpression[str]:
        """``column`` ordered as Python orders strings (PostgreSQL's collation may not be)."""
        return column.collate("C") if self.db.engine.dialect.name == "postgresql" else column

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
        """Everything the dashboard draws for one range, in one JSON-able dict.

        Each part is a grouped query over the daily roll-ups or over indexed raw rows in the
        range, plus the live days (not rolled up yet) computed once from raw rows; nothing reads
        every user's report.
        """
        length, step = RANGES[range_name]
        start = logic.floor_time(now - length, int(step.total_seconds())) + step
        end = logic.floor_time(now, int(step.total_seconds())) + step
        first_day, last_day = logic.day_start(start), logic.day_start(now) + DAY
        with self.db.session() as session:
            split = min(max(self.rolled_until(session, now), first_day), last_day)
            live = self._live_days(session, split, last_day, now) if split < last_day else {}
            if step < DAY:
                # steps before the live days are kept, like the sums over rolled-up days
                cut = max(start, split)
                series = self._remember(
                    f"series:{range_name}",
                    (start, cut, self.past_writes),
                    lambda: self._step_series(session, start, cut, step, now),
                ) + self._step_series(session, cut, end, step, now)
            else:
                series = self._daily_series(session, start, end, split, live)
            groups = [
                (group, members)
                for group, members in session.execute(
                    select(GroupMembership.group, func.count())
                    .where(GroupMembership.left.is_(None))
                    .group_by(GroupMembership.group)
                    .order_by(func.count().desc(), GroupMembership.group)
                    .limit(top)
                )
            ]
            report = UsageQuery(first_day, last_day, None, None, "json")
            live_rows = logic.live_rows(live)
            reads = top + len(live_rows)  # the merge skips the rolled rows of live users
            with closing(self._rolled_ordered(session, range_name, report, split, reads)) as rolled:
                # read only as far as the top needs: the cursor is closed before the rest
                top_rows = logic.merge_sorted_usage(
                    rolled,
                    live_rows,
                    self._rolled_of_live(session, range_name, report, split, live_rows),
                )
                users = list(islice(top_rows, top))
            group_rows = self._group_usage(session, range_name, groups, first_day, split, live)
            past = self._remember(
                f"lengths:{range_name}",
                (start, split, self.past_writes),
                lambda: self._session_lengths(session, start, split),
            )
            lengths = [
                a + b
                for a, b in zip(
                    past, self._session_lengths(session, max(start, split)), strict=True
                )
            ]
        return {
            "range": range_name,
            "step_seconds": step.total_seconds(),
            "series": [
                {"t": logic.iso(t), "active_users": a, "running_servers": r} for t, a, r in series
            ],
            "users": [u.as_dict() for u in users],
            "groups": [g.as_dict() for g in group_rows],
            "session_lengths": {"buckets": list(logic.DURATION_BUCKETS), "counts": lengths},
            "culls": self.recent_culls(),
        }

    def warm_dashboard(self, now: datetime) -> None:
        """Compute every range's dashboard once, so that its sums over the rolled-up days are
        kept before anyone asks: after a roll-up or a restart the first request would
        otherwise sum the whole range itself (seconds, at tens of thousands of users)."""
        for range_name in RANGES:
            self.dashboard(range_name, now)

    def _remember(self, name: str, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """``compute()``, kept until ``key`` changes: the dashboard's sums over rolled-up days
        change only when a roll-up moves the split, so repeated requests (and the ranges' other
        users) do not sum the same year of rows again. One value per name: memory stays flat."""
        with self._memo_lock:
            kept = self._memos.get(name)
        if kept is not None and kept[0] == key:
            return cast(T, kept[1])
        value = compute()
        self._keep(name, key, value)
        return value

    def _keep(self, name: str, key: tuple[Any, ...], value: Any) -> None:
        """Keep ``value`` as :meth:`_remember`'s ``name`` until ``key`` changes."""
        with self._memo_lock:
            self._memos[name] = (key, value)

    def _rolled_of_live(
        self,
        session: Session,
        range_name: str,
        report: UsageQuery,
        split: datetime,
        live: Mapping[str, Any],
    ) -> dict[str, UserUsage]:
        """:meth:`_rolled_of` the live days' users, remembered until the next roll-up; only
        users not asked for yet today are read (they are the users active today)."""
        if report.start >= split:
            return {}
        known: dict[str, UserUsage | None] = self._remember(
            f"rolled_of_live:{range_name}", (report.start, split), dict
        )
        missing = [user for user in live if user not in known]
        if missing:
            found = self._rolled_of(session, report, split, missing)
            with self._memo_lock:
                known.update({user: found.get(user) for user in missing})
        return {user: row for user in live if (row := known.get(user)) is not None}

    def _rolled_ordered(
        self,
        session: Session,
        range_name: str,
        report: UsageQuery,
        split: datetime,
        reads: int,
    ) -> Generator[UserUsage, None, None]:
        """The rolled-up report in its order, of which the caller reads about ``reads`` rows:
        a prefix of at least that many (and ROLLED_PREFIX) is remembered, the rest read from
        the database again if ever needed. The merge with the live days skips the rows of
        users active today, so the dashboard's top reads up to top + those users; a prefix
        too short for that is read again, twice as long, once, not on every request."""
        if report.start >= split:
            return

        def prefix(length: int) -> tuple[list[UserUsage], bool]:
            with closing(self._rolled(session, report, split, ordered=True)) as rows:
                first = list(islice(rows, length + 1))
            return first[:length], len(first) <= length

        name, key = f"top:{range_name}", (report.start, split)
        rows, complete = self._remember(name, key, lambda: prefix(max(ROLLED_PREFIX, 2 * reads)))
        if not complete and len(rows) < reads:  # more users active than when it was read
            rows, complete = prefix(2 * reads)
            self._keep(name, key, (rows, complete))
        yield from rows
        if not complete:
            with closing(self._rolled(session, report, split, ordered=True)) as rest:
                yield from islice(rest, len(rows), None)

    def _step_series(
        self, session: Session, start: datetime, end: datetime, step: timedelta, now: datetime
    ) -> list[tuple[datetime, int, int]]:
        """:func:`logic.time_series` of the steps in [start, end): users active (counted by the
        database), servers running (from the runs in the range)."""
        if start >= end:
            return []
        return logic.time_series(
            start,
            end,
            step,
            self._spans(session, start, end),
            self._active_per_step(session, start, end, step),
            now,
        )

    def _active_per_step(
        self, session: Session, start: datetime, end: datetime, step: timedelta
    ) -> dict[int, int]:
        """:func:`logic.active_per_step`, counted by the database from the bucket index."""
        index = _whole(
            _seconds_between(literal(start, DateTime()), ActivityBucket.bucket)
            / step.total_seconds()
        )
        steps = (
            select(index.label("i"), ActivityBucket.user)
            .where(ActivityBucket.bucket >= start, ActivityBucket.bucket < end)
            .subquery()
        )
        result = session.execute(
            select(steps.c.i, func.count(distinct(steps.c.user))).group_by(steps.c.i)
        )
        return {int(i): n for i, n in result}

    def _session_lengths(
        self, session: Session, since: datetime, until: datetime | None = None
    ) -> list[int]:
        """:func:`logic.duration_histogram` of the runs ended since ``since`` (and before
        ``until``), counted by the database (the index on ``ended``), not read one by one."""
        seconds = _seconds_between(ServerSession.started, ServerSession.ended)
        bucket = case(
            *((seconds <= edge, i) for i, edge in enumerate(logic.DURATION_BUCKETS)),
            else_=len(logic.DURATION_BUCKETS),
        )
        runs = (
            select(bucket.label("b"))
            .where(
                ServerSession.ended.is_not(None),
                ServerSession.ended >= since,
                *([] if until is None else [ServerSession.ended < until]),
            )
            .subquery()
        )
        counts = [0] * (len(logic.DURATION_BUCKETS) + 1)
        for i, n in session.execute(select(runs.c.b, func.count()).group_by(runs.c.b)):
            counts[int(i)] = n
        return counts

    def _group_usage(
        self,
        session: Session,
        range_name: str,
        groups: list[tuple[str, int]],
        start: datetime,
        split: datetime,
        live: dict[datetime, dict[str, DayUsage]],
    ) -> list[logic.GroupUsage]:
        """The dashboard's group table: one grouped query over the roll-ups for all the groups,
        plus the live days; the same numbers as each group's usage report."""
        names = [group for group, _ in groups]
        rolled = self._remember(
            f"groups:{range_name}",
            (start, split, tuple(names)),
            lambda: self._group_rolled(session, names, start, split),
        )
        users = sorted({user for per_user in live.values() for user in per_user})
        memberships: dict[str, dict[str, list[tuple[datetime, datetime | None]]]] = {}
        for chunk in _chunks(users):
            for group, user, joined, left in session.execute(
                select(
                    GroupMembership.group,
                    GroupMembership.user,
                    GroupMembership.joined,
                    GroupMembership.left,
                ).where(GroupMembership.group.in_(names), GroupMembership.user.in_(chunk))
            ):
                memberships.setdefault(group, {}).setdefault(user, []).append((joined, left))
        # (group, user) pairs already active on a rolled-up in-group day, per live user: kept
        # until the next roll-up like _rolled_of_live, so only today's new users are looked up
        known: dict[str, frozenset[str]] = self._remember(
            f"active_before:{range_name}", (start, split), dict
        )
        missing = [user for user in users if user not in known]
        if missing and start < split:
            found: dict[str, set[str]] = {}
            for chunk in _chunks(missing):
                for group, user in session.execute(
                    select(GroupMembership.group, DailyUsage.user)
                    .join(
                        GroupMembership,
                        and_(
                            GroupMembership.user == DailyUsage.user,
                            _member_that_day(DailyUsage.day),
                        ),
                    )
                    .where(
                        DailyUsage.user.in_(chunk),
                        DailyUsage.active_seconds > 0,
                        DailyUsage.day >= start,
                        DailyUsage.day < split,
                    )
                    .distinct()
                ):
                    found.setdefault(user, set()).add(group)
            with self._memo_lock:
                known.update({user: frozenset(found.get(user, ())) for user in missing})
        active_before = {(g, user) for user in users for g in known.get(user, ())}
        return logic.group_usage(groups, rolled, live, memberships, active_before)

    def _group_rolled(
        self, session: Session, names: list[str], start: datetime, split: datetime
    ) -> dict[str, tuple[int, float]]:
        """Per group: users active on a rolled-up in-group day, and server seconds then."""
        if not names or start >= split:
            return {}
        # one row per (group, user, day) however many memberships overlap the day
        days = (
            select(
                GroupMembership.group.label("grp"),
                DailyUsage.user,
                DailyUsage.day,
                DailyUsage.server_seconds,
                DailyUsage.active_seconds,
            )
            .join(
                GroupMembership,
                and_(GroupMembership.user == DailyUsage.user, _member_that_day(DailyUsage.day)),
            )
            .where(
                GroupMembership.group.in_(names),
                DailyUsage.day >= start,
                DailyUsage.day < split,
            )
            .distinct()
            .subquery()
        )
        active = distinct(case((days.c.active_seconds > 0, days.c.user)))
        return {
            group: (int(n), float(seconds or 0.0))
            for group, n, seconds in session.execute(
                select(days.c.grp, func.count(active), func.sum(days.c.server_seconds)).group_by(
                    days.c.grp
                )
            )
        }

    def _daily_series(
        self,
        session: Session,
        start: datetime,
        end: datetime,
        split: datetime,
        live: dict[datetime, dict[str, DayUsage]],
    ) -> list[tuple[datetime, int, int]]:
        """Per day: users active, users with a running server (roll-ups, then the live days)."""

        def rolled() -> dict[datetime, tuple[int, int]]:
            return {
                day: (active, running)
                for day, active, running in session.execute(
                    select(
                        DailyUsage.day,
                        func.count().filter(DailyUsage.active_seconds > 0),
                        func.count().filter(DailyUsage.server_seconds > 0),
                    )
                    .where(DailyUsage.day >= start, DailyUsage.day < min(split, end))
                    .group_by(DailyUsage.day)
                )
            }

        points = dict(self._remember("series:days", (start, end, split), rolled))
        for day, per_user in live.items():
            if start <= day < end:
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


def _member_that_day(day: SQLColumnExpression[datetime]) -> ColumnElement[bool]:
    """In a query joined with the memberships: the membership overlaps ``day`` (the days a
    member was in the group at some time, as :func:`logic.member_on`)."""
    return and_(
        day >= func.date(GroupMembership.joined),
        or_(GroupMembership.left.is_(None), day < GroupMembership.left),
    )


class _seconds_between(FunctionElement[float]):
    """``end - start`` in seconds, to the microsecond, on SQLite and PostgreSQL."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(_seconds_between, "postgresql")
def _seconds_between_postgresql(element: _seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(_seconds_between, "sqlite")
def _seconds_between_sqlite(element: _seconds_between, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff'; SQLite's date functions keep only
    # milliseconds, so whole seconds from strftime and the microseconds from the text.
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return (
        f"((CAST(strftime('%s', {end}) AS INTEGER) - CAST(strftime('%s', {start}) AS INTEGER))"
        f" + (CAST(substr({end}, 21) AS INTEGER) - CAST(substr({start}, 21) AS INTEGER))"
        " / 1000000.0)"
    )


class _whole(FunctionElement[int]):
    """The whole part of a number that is not negative."""

    type = Integer()
    inherit_cache = True
    name = "whole"


@compiles(_whole, "postgresql")
def _whole_postgresql(element: _whole, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(_whole, "sqlite")
def _whole_sqlite(element: _whole, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"  # truncates


def _jsonable(value: Any) -> Any:
    """A cell of a table we do not know the schema of, as JSON."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
