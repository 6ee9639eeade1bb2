"""Stats storage on SQLite and on a real PostgreSQL: the poller's writes, roll-ups, reports.

The hub is replaced by a stub that hands the poller prepared user lists (or fails), and the
clock by a variable: these tests are about what is stored, the real hub is in integration.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client import CollectorRegistry
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    event,
    func,
    insert,
    select,
)

from hubservices.common.csvsafe import csv_text
from hubservices.common.db import Database
from hubservices.common.hubapi import HubUnavailable
from hubservices.stats import handlers, logic
from hubservices.stats import poller as poller_module
from hubservices.stats import store as store_module
from hubservices.stats.logic import (
    DAY,
    ClosedSession,
    HubSnapshot,
    LiveServer,
    SessionChanges,
    UsageQuery,
    day_start,
    iso,
    parse_usage_query,
)
from hubservices.stats.metrics import PollMetrics
from hubservices.stats.models import (
    ActivityBucket,
    Base,
    DailyUsage,
    GroupMembership,
    Meta,
    ServerSession,
)
from hubservices.stats.poller import Poller
from hubservices.stats.store import RANGES, ROLLED_UNTIL, StatsStore

DAY0 = datetime(2026, 3, 2)  # a Monday


class StubHub:
    """Hands out the user list a test set, or raises as an unreachable hub would."""

    hub_version = "5.3.0"

    def __init__(self) -> None:
        self.users: list[dict[str, Any]] = []
        self.fail = False
        self.requests: list[str | None] = []  # the state filter of each listing

    async def paginate(self, *segments: str, params: Any = None) -> AsyncIterator[dict]:
        """The users, or with ``state=active`` those with a running or pending server, as
        the hub filters them."""
        if self.fail:
            raise HubUnavailable("GET", "/users", 503, "hub down")
        self.requests.append((params or {}).get("state"))
        for user in self.users:
            if (params or {}).get("state") == "active":
                servers = {n: s for n, s in user["servers"].items() if s["ready"] or s["pending"]}
                if not servers:
                    continue
                user = {**user, "servers": servers}
            yield user


class Clock:
    def __init__(self) -> None:
        self.now = DAY0 + timedelta(hours=9)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (
        f"sqlite:///{tmp_path / 'stats.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    database = Database(
        url, migrations="hubservices.stats.migrations", version_table="alembic_version_stats"
    )
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(poller_module, "utcnow", clock)
    return clock


def make_poller(
    db: Database,
    hub: StubHub,
    retention: timedelta | None = None,
    interval: float = 60,
    sync_interval: float = 3600,
) -> Poller:
    store = StatsStore(db, bucket_seconds=900, retention=retention)
    metrics = PollMetrics(CollectorRegistry())
    return Poller(
        hub, store, metrics, interval=interval, sync_interval=sync_interval, groups={"c1"}
    )


def user(name: str, servers: dict[str, datetime] | None = None, *, last=None, groups=()) -> dict:
    return {
        "name": name,
        "last_activity": iso(last),
        "groups": list(groups),
        "servers": {
            s: {"started": iso(t), "ready": True, "pending": None, "last_activity": iso(last)}
            for s, t in (servers or {}).items()
        },
    }


def sessions(db: Database) -> list[tuple]:
    with db.session() as s:
        rows = s.scalars(select(ServerSession).order_by(ServerSession.id))
        return [(r.user, r.server, r.started, r.ended, r.end_reason) for r in rows]


def test_migrations_build_exactly_the_models(db: Database) -> None:
    db.upgrade()  # again: nothing to do
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": "alembic_version_stats"}
        )
        assert compare_metadata(context, Base.metadata) == []


async def test_sessions_follow_servers_and_survive_a_restart(db: Database, clock: Clock) -> None:
    hub = StubHub()
    start = clock.now - timedelta(minutes=10)
    hub.users = [user("a b", {"": start}, last=clock.now), user("dana#1", {"gpu": clock.now})]
    first = make_poller(db, hub)
    await first.poll()
    assert first.last is not None
    assert first.metrics.starts._value.get() == 2

    # the service restarts: a new poller loads the open sessions and continues them
    clock.advance(minutes=5)
    restarted = make_poller(db, hub)
    await restarted.poll()
    assert restarted.metrics.starts._value.get() == 0
    assert len(sessions(db)) == 2

    clock.advance(minutes=1)
    hub.users = [user("a b", last=clock.now), user("dana#1", {"gpu": start + timedelta(hours=1)})]
    await restarted.poll()
    rows = sessions(db)
    assert rows[0] == ("a b", "", start, clock.now, "stopped")
    assert rows[1][3] == clock.now and rows[1][4] == "stopped"  # restarted between polls
    assert rows[2][:3] == ("dana#1", "gpu", start + timedelta(hours=1))
    assert restarted.metrics.session_duration._sum.get() == pytest.approx(16 * 60 + 6 * 60)
    assert [s["server"] for s in restarted.store.user_sessions("dana#1")] == ["gpu", "gpu"]


async def test_run_closed_by_mistake_is_reopened_not_duplicated(db: Database, clock: Clock) -> None:
    hub = StubHub()
    start = clock.now
    hub.users = [user("ann", {"": start})]
    poller = make_poller(db, hub)
    await poller.poll()
    hub.users = [user("ann")]  # the hub briefly does not list it (e.g. while restarting)
    clock.advance(minutes=1)
    await poller.poll()
    hub.users = [user("ann", {"": start})]
    clock.advance(minutes=1)
    await poller.poll()
    assert sessions(db) == [("ann", "", start, None, None)]


async def test_failed_poll_is_counted_and_loses_nothing(db: Database, clock: Clock) -> None:
    hub = StubHub()
    hub.users = [user("ann", {"": clock.now})]
    poller = make_poller(db, hub)
    await poller.poll()
    last = poller.last
    hub.fail = True
    clock.advance(minutes=1)
    await poller.poll()
    assert poller.metrics.poll_errors._value.get() == 1
    assert poller.last is last  # metrics keep the last good snapshot
    assert sessions(db)[0][3] is None


async def test_activity_is_stored_only_when_it_moves(db: Database, clock: Clock) -> None:
    hub = StubHub()
    poller = make_poller(db, hub)
    for _ in range(10):  # ten polls of 100 idle users and one busy one
        hub.users = [user(f"idle{i}", last=DAY0) for i in range(100)]
        hub.users.append(user("busy", {"": DAY0}, last=clock.now))
        await poller.poll()
        clock.advance(minutes=5)
    with db.session() as s:
        rows = s.execute(select(ActivityBucket.user, func.count()).group_by(ActivityBucket.user))
        counts = dict(rows.all())
    assert counts.pop("busy") == 4  # 50 minutes in 15-minute buckets
    assert set(counts.values()) == {1}  # idle users: their one old bucket, once


async def test_steady_polls_ask_for_active_users_and_a_full_sync_catches_up(
    db: Database, clock: Clock
) -> None:
    """Between full syncs the hub lists only users with a server; what happens to the others
    (new users, hub activity without a server, group changes) shows at the next sync, while
    sessions start and end on time."""
    hub = StubHub()
    poller = make_poller(db, hub, interval=60, sync_interval=3600)
    hub.users = [user("ann", {"": clock.now}, last=clock.now, groups=["c1"]), user("bob")]
    await poller.poll()
    assert hub.requests == [None]  # the first poll is a full sync
    clock.advance(minutes=5)
    hub.users = [
        user("ann", last=clock.now, groups=["c1", "c2"]),  # server stopped
        user("bob", last=clock.now, groups=["c1"]),  # on the hub, no server
        user("cat", {"": clock.now}, last=clock.now),  # new, started a server
    ]
    await poller.poll()
    assert hub.requests == [None, "active"]
    assert [(u, ended is not None) for u, _, _, ended, _ in sessions(db)] == [
        ("ann", True),
        ("cat", False),
    ]
    assert poller.last is not None
    assert poller.last.summary.users == 3  # cat came with her server
    assert poller.last.summary.active_users["1h"] == 2  # ann (at her sync), cat; not yet bob
    assert poller.last.summary.group_active_users[("c1", "1h")] == 1  # ann's sync-time groups
    clock.advance(minutes=56)
    await poller.poll()
    assert hub.requests == [None, "active", None]  # an hour after the last sync
    assert poller.last.summary.active_users["1h"] == 3  # bob's 09:05 activity, seen now
    with db.session() as s:
        rows = s.execute(select(ActivityBucket.user, func.count()).group_by(ActivityBucket.user))
        assert dict(rows.all()) == {"ann": 1, "bob": 1, "cat": 1}
    assert poller.last.summary.group_active_users[("c1", "1h")] == 2  # bob joined c1
    [family] = poller.metrics.poll_duration.collect()
    assert {s.labels["kind"] for s in family.samples} == {"full", "active"}


async def test_roll_up_report_and_retention_agree(db: Database, clock: Clock) -> None:
    """The usage report is the same from raw rows, from roll-ups, and after pruning."""
    hub = StubHub()
    poller = make_poller(db, hub, retention=timedelta(days=2), interval=3600)
    start = clock.now  # Monday 09:00
    for hour in range(0, 48):  # ann runs a server for two days; bob for an hour on Monday
        hub.users = [
            user("ann", {"": start}, last=clock.now, groups=["c1"] if hour < 24 else []),
            user("bob", {"": start} if hour == 0 else None, last=start, groups=["c1"]),
        ]
        await poller.poll()
        clock.advance(hours=1)
    query = UsageQuery(DAY0, DAY0 + timedelta(days=3), None, None, "json")
    live_now = clock.now  # Wednesday 09:00, Monday and Tuesday rolled up
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(DailyUsage)) == 3
    report = {r.user: r for r in poller.store.usage(query, live_now)}
    assert report["ann"].server_hours == pytest.approx(48)
    assert report["ann"].days_active == 3
    assert report["ann"].active_hours == pytest.approx(12.0)  # one bucket an hour
    assert report["bob"].sessions == 1 and report["bob"].server_hours == pytest.approx(1)

    # ann left c1 on Tuesday 09:00: the group report counts her Monday and Tuesday only
    group = UsageQuery(DAY0, DAY0 + timedelta(days=3), None, "c1", "json")
    by_group = {r.user: r for r in poller.store.usage(group, live_now)}
    assert by_group["ann"].days_active == 2
    assert by_group["ann"].server_hours == pytest.approx(15 + 24)

    # a week later everything raw from before the cutoff is pruned; the report is unchanged
    clock.advance(days=7)
    hub.users = [user("ann"), user("bob")]
    await poller.poll()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ActivityBucket)) == 0
        assert s.scalar(select(func.count()).select_from(ServerSession)) == 0
    again = {r.user: r for r in poller.store.usage(query, clock.now)}
    # ann's server vanished while unobserved: it ended when last seen, Wednesday 08:00
    assert again["ann"].server_hours == pytest.approx(47)
    assert again["ann"].active_hours == report["ann"].active_hours
    assert again["bob"] == report["bob"]


async def test_dashboard_and_culls(db: Database, clock: Clock) -> None:
    hub = StubHub()
    hub.users = [user("ann", {"": clock.now - timedelta(hours=1)}, last=clock.now, groups=["c1"])]
    poller = make_poller(db, hub)
    await poller.poll()
    for range_name, points in [("day", 96), ("week", 168), ("semester", 182)]:
        data = poller.store.dashboard(range_name, clock.now)
        assert len(data["series"]) == points
        assert data["series"][-1]["running_servers"] == 1
        assert data["users"][0]["user"] == "ann"
        assert data["groups"][0]["group"] == "c1"
        assert data["culls"] is None  # no cull service in this database

    culls = Table(
        "culls",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("at", DateTime(timezone=True)),
        Column("user", String(255)),
        Column("why", String(255)),
    )
    culls.create(db.engine)
    with db.engine.begin() as connection:
        connection.execute(insert(culls), [{"at": clock.now, "user": "bob", "why": "idle"}])
    shown = poller.store.recent_culls()
    assert shown is not None
    assert shown["columns"] == ["at", "user"]
    assert shown["rows"][0][1] == "bob"


async def test_the_days_roll_up_sums_the_dashboard_before_anyone_asks(
    db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the poll that rolls a day up (and the first poll after a start), the dashboard's
    sums over rolled-up days are computed in the background: an admin's first request of the
    day reads no rolled-up row, where a store that did not warm up sums them on the request.
    So again after a poll first sees a run that started on an earlier day. The kept top rows
    outnumber the users active today, whose rolled rows the top skips (with fewer, every
    request summed the range again: here the top rolled row is ann's, active today)."""
    monkeypatch.setattr(store_module, "ROLLED_PREFIX", 1)
    hub = StubHub()
    poller = make_poller(db, hub)
    for _ in range(3):  # two days rolled up, the third is live
        hub.users = [
            user("ann", {"": DAY0}, last=clock.now, groups=["c1"]),
            user("bob", last=clock.now),  # active without a server: a rolled row after ann's
        ]
        await poller.poll()
        assert poller.warming is not None
        poller.warming.join(timeout=30)  # (a warm-up still running is not started again)
        clock.advance(days=1)
    clock.advance(days=-1)

    def reads_of_rolled_days(store: StatsStore) -> list[str]:
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            for range_name in RANGES:
                store.dashboard(range_name, clock.now)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        return [s for s in statements if DailyUsage.__tablename__ in s]

    assert reads_of_rolled_days(poller.store) == []
    assert reads_of_rolled_days(StatsStore(db, bucket_seconds=900)) != []

    past_writes = poller.store.past_writes
    clock.advance(minutes=1)
    bob_since = clock.now - timedelta(days=1, hours=2)
    hub.users = [
        user("ann", {"": DAY0}, last=clock.now, groups=["c1"]),
        user("bob", {"": bob_since}, last=bob_since),
    ]
    warmed_before = poller.warming
    await poller.poll()
    assert poller.store.past_writes != past_writes
    assert poller.warming is not None and poller.warming is not warmed_before
    poller.warming.join(timeout=30)
    assert reads_of_rolled_days(poller.store) == []


async def test_a_2000_member_group_in_every_dashboard_range(db: Database, clock: Clock) -> None:
    """A group of 2,000 (one OR term per membership failed from about 1,000 on SQLite: the
    dashboard, which shows the largest groups, answered 500 for everyone)."""
    size = 2000
    members = [f"m{i:04d}" for i in range(size)]
    hub = StubHub()
    start = clock.now  # Monday 09:00: everyone joins "big" then, some run a server
    hub.users = [
        user(name, {"": start} if i % 4 == 0 else None, last=start, groups=["big"])
        for i, name in enumerate(members)
    ] + [user("outsider", {"": start}, last=start)]
    poller = make_poller(db, hub, interval=3600)
    await poller.poll()
    clock.advance(days=2)  # the next poll rolls Monday and Tuesday up into the daily table
    await poller.poll()
    with db.session() as s:
        # Monday: everyone active; Tuesday: the servers still running; the outsider both days
        assert s.scalar(select(func.count()).select_from(DailyUsage)) == size + size // 4 + 2

    rolled = UsageQuery(DAY0, DAY0 + timedelta(days=2), None, "big", "json")
    report = {r.user: r for r in poller.store.usage(rolled, clock.now)}
    assert len(report) == size and "outsider" not in report  # all were active on Monday
    # Monday counts although they joined at 09:00: membership is by day
    assert report["m0000"].days_active == 2
    assert report["m0000"].server_hours == pytest.approx(15 + 24)
    assert report["m0001"].server_hours == 0

    for range_name, (length, _step) in RANGES.items():
        board = poller.store.dashboard(range_name, clock.now)
        big = next(g for g in board["groups"] if g["group"] == "big")
        assert big["members"] == size
        assert big["active_users"] == (size if range_name != "day" else 0)
        first_day = max(DAY0, day_start(clock.now - length))
        everyone = UsageQuery(first_day, day_start(clock.now) + DAY, None, None, "json")
        rows = poller.store.usage(everyone, clock.now)
        expected = sum(r.server_hours for r in rows if r.user != "outsider")
        assert big["server_hours"] == pytest.approx(expected, abs=0.01)
        assert big["server_hours"] > size // 4 * 24 * (1 if range_name == "day" else 1.5)


async def test_database_locked_35_seconds_fails_one_poll_and_loses_nothing(
    tmp_path: Path, clock: Clock
) -> None:
    """Another process holds SQLite's write lock longer than the busy timeout (30 s)."""
    path = tmp_path / "stats.sqlite"
    db = Database(
        f"sqlite:///{path}",
        migrations="hubservices.stats.migrations",
        version_table="alembic_version_stats",
    )
    db.upgrade()
    hub = StubHub()
    hub.users = [user("ann", {"": clock.now}, last=clock.now)]
    poller = make_poller(db, hub)
    await poller.poll()
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # the write lock, as a long writer holds it
        clock.advance(minutes=1)
        hub.users.append(user("bob", {"": clock.now}, last=clock.now, groups=["c1"]))
        hub.users[0]["servers"] = {}  # ann stopped
        release = asyncio.get_running_loop().call_later(35, locker.rollback)
        await poller.poll()  # waits the busy timeout, fails, is counted
        assert poller.metrics.poll_errors._value.get() == 1
        assert [(s[0], s[3]) for s in sessions(db)] == [("ann", None)]
        await asyncio.sleep(max(0.0, release.when() - asyncio.get_running_loop().time()) + 0.1)
        clock.advance(minutes=1)
        await poller.poll()  # the next poll, after the lock: every change stored once
    finally:
        locker.close()
        db.dispose()
    assert poller.metrics.poll_errors._value.get() == 1
    stored = {s[0]: s for s in sessions(db)}
    assert len(sessions(db)) == 2
    assert stored["ann"][4] == "stopped" and stored["bob"][3] is None


NOW = DAY0 + timedelta(days=9, hours=12)  # Wednesday of the next week, 12:00
HOSTILE = "=cmd|' /C calc'!A0"


def store_history(db: Database) -> StatsStore:
    """Ten days of sessions and activity of nine users in three groups, on quarter hours (so
    sums are exact whichever way they are added), nothing rolled up yet.

    ann moves from c1 to c2; eve leaves c3 and rejoins it the same day; hal only runs today,
    three servers at once, enough to lead the semester's top users from the live day alone.
    """
    names = ["ann", "bob", HOSTILE, "-2+3", "carl", "dee", "eve", "fay", "gus"]
    runs, marks = [], []
    for d in range(10):
        day = DAY0 + timedelta(days=d)
        for i, name in enumerate(names):
            if (i + d) % 3 == 0:
                continue
            started = day + timedelta(hours=8 + i % 4, minutes=15 * (i % 3))
            if i == 4 and d == 4:
                started = day + timedelta(hours=22)  # runs over midnight
            ended = started + timedelta(hours=1 + (i * d) % 5, minutes=30)
            runs.append((name, "", started, None if d == 9 and i % 2 else ended))
            marks += [(name, started + timedelta(minutes=15 * k)) for k in range(1 + i % 6)]
        marks.append(("fay", day + timedelta(hours=20)))  # active without a server
    today = DAY0 + timedelta(days=9)
    runs += [("hal", s, today, None) for s in ("", "a", "b")]
    marks.append(("hal", today + timedelta(hours=1)))
    joined = DAY0 - timedelta(days=30)
    memberships = [
        ("c1", "ann", joined, DAY0 + timedelta(days=5, hours=13)),
        ("c2", "ann", DAY0 + timedelta(days=3, hours=10), None),
        ("c1", "bob", joined, None),
        ("c1", HOSTILE, joined, None),
        ("c1", "-2+3", joined, None),
        ("c2", "carl", joined, None),
        ("c2", "dee", joined, None),
        ("c3", "eve", joined, DAY0 + timedelta(days=2, hours=10)),
        ("c3", "eve", DAY0 + timedelta(days=2, hours=15), None),
        ("c3", "hal", joined, None),
    ]
    with db.session() as s:
        s.add_all(
            ServerSession(
                user=u, server=srv, started=t, ended=e, end_reason=e and "stopped", last_seen=NOW
            )
            for u, srv, t, e in runs
        )
        s.add_all(ActivityBucket(user=u, bucket=t) for u, t in set(marks))
        s.add_all(GroupMembership(group=g, user=u, joined=j, left=x) for g, u, j, x in memberships)
        s.add(Meta(key=ROLLED_UNTIL, value=DAY0.isoformat()))  # every day still raw ("live")
    return StatsStore(db, bucket_seconds=900)


def dashboards(store: StatsStore) -> dict[str, dict]:
    return {name: store.dashboard(name, NOW, top=3) for name in RANGES}


def test_dashboard_tables_are_the_usage_reports(db: Database) -> None:
    """Group table and top users, from grouped queries over roll-ups plus the live day, show
    what each group's (and everyone's) usage report says, and what raw rows alone say."""
    store = store_history(db)
    from_raw = dashboards(store)
    assert store.roll_up(NOW) == 9  # all but today: now from the daily table
    rolled = dashboards(store)
    assert rolled == from_raw
    for name, board in rolled.items():
        length, step = RANGES[name]
        first = day_start(logic.floor_time(NOW - length, int(step.total_seconds())) + step)
        report = store.usage(UsageQuery(first, day_start(NOW) + DAY, None, None, "json"), NOW)
        assert board["users"] == [r.as_dict() for r in report[:3]]
        assert [g["group"] for g in board["groups"]] == ["c1", "c2", "c3"]
        assert [g["members"] for g in board["groups"]] == [3, 3, 2]
        for row in board["groups"]:
            query = UsageQuery(first, day_start(NOW) + DAY, None, row["group"], "json")
            per_group = store.usage(query, NOW)
            assert row["active_users"] == sum(1 for r in per_group if r.active_hours > 0)
            assert row["server_hours"] == pytest.approx(sum(r.server_hours for r in per_group))
    semester = rolled["semester"]
    assert semester["users"][0]["user"] == "hal"  # 36 h today: the live day lifts hal first
    c3 = semester["groups"][2]
    assert c3["active_users"] == 2  # eve (twice a member on day 2, counted once) and hal

    with db.session() as s:
        runs = s.execute(select(ServerSession.started, ServerSession.ended)).all()
        marks = s.execute(select(ActivityBucket.user, ActivityBucket.bucket)).all()
    for name, board in rolled.items():
        start = datetime.fromisoformat(board["series"][0]["t"].rstrip("Z"))
        lengths = [(e - t).total_seconds() for t, e in runs if e is not None and e >= start]
        assert board["session_lengths"]["counts"] == logic.duration_histogram(lengths)
        if name != "semester":
            step = timedelta(seconds=board["step_seconds"])
            active = logic.active_per_step(start, step, marks)
            assert [p["active_users"] for p in board["series"]] == [
                active.get(i, 0) for i in range(len(board["series"]))
            ]
    assert sum(rolled["week"]["session_lengths"]["counts"]) > 20
    assert sum(p["active_users"] for p in rolled["day"]["series"]) > 5


@pytest.mark.parametrize("params", [{}, {"group": "c1"}, {"group": "c3"}, {"user": HOSTILE}])
def test_streamed_export_is_the_whole_report(
    db: Database, monkeypatch: pytest.MonkeyPatch, params: dict[str, str]
) -> None:
    """``api/usage`` streams in pieces of ROWS_PER_CHUNK rows; joined, they are the report
    encoded at once, from raw rows and from roll-ups alike (CSV: formula cells neutralized)."""
    monkeypatch.setattr(handlers, "ROWS_PER_CHUNK", 2)
    store = store_history(db)
    query = parse_usage_query({"from": "2026-03-01", **params, "format": "csv"}, NOW.date())

    def export() -> list[str]:
        return list(handlers.usage_export(query, store.usage_rows(query, NOW)))

    from_raw, whole = export(), store.usage(query, NOW)
    assert store.roll_up(NOW) == 9
    chunks = export()
    assert "".join(chunks) == "".join(from_raw)
    assert store.usage(query, NOW) == whole
    assert len(chunks) == max(1, -(-len(whole) // 2))  # the header comes with the first rows
    assert "".join(chunks) == csv_text(logic.USAGE_FIELDS, (r.as_dict() for r in whole))
    rows = list(csv.DictReader(io.StringIO("".join(chunks), newline="")))
    assert [r["user"] for r in rows] == [
        "'" + r.user if r.user in (HOSTILE, "-2+3") else r.user for r in whole
    ]
    if not params:
        assert len(rows) == 10 and rows[0]["user"] == "hal"


def test_streamed_json_export_is_the_whole_report(db: Database) -> None:
    store = store_history(db)
    store.roll_up(NOW)
    query = parse_usage_query({"from": "2026-03-01", "group": "c2"}, NOW.date())
    body = "".join(handlers.usage_export(query, store.usage_rows(query, NOW)))
    users = [r.as_dict() for r in store.usage(query, NOW)]
    assert body == json.dumps(
        {"from": "2026-03-01", "to": "2026-03-11", "user": None, "group": "c2", "users": users}
    )
    assert {u["user"] for u in users} == {"ann", "carl", "dee"}


def test_remembered_dashboard_sums_follow_what_is_first_seen_about_the_past(
    db: Database,
) -> None:
    """The dashboard keeps its sums over earlier days until the next roll-up, yet shows at once
    what a poll first sees about them (the service was down overnight): activity of late
    yesterday, a run started two days ago, and that run closed at the time it was last seen."""
    store = store_history(db)
    store.roll_up(NOW)
    semester_before, week_before = (store.dashboard(r, NOW) for r in ("semester", "week"))

    def grew(week: dict, hours_before_today: int, field: str) -> int:
        t = iso(day_start(NOW) - timedelta(hours=hours_before_today))
        now, then = ({p["t"]: p for p in w["series"]}[t] for w in (week, week_before))
        return int(now[field] - then[field])

    snapshot = HubSnapshot(NOW, "5.3.0", {"zed": None}, [], frozenset())
    late = {"zed": day_start(NOW) - timedelta(minutes=15)}  # yesterday 23:45
    store.apply(snapshot, SessionChanges(), late, [], [])
    week = store.dashboard("week", NOW)
    assert grew(week, 1, "active_users") == 1

    run = LiveServer("zed", "", NOW - timedelta(days=2), None, "running")
    (opened,) = store.apply(snapshot, SessionChanges(opened=[run]), {}, [], [])
    week = store.dashboard("week", NOW)
    assert grew(week, 25, "running_servers") == 1  # two days ago 23:00
    assert grew(week, 1, "running_servers") == 1  # still open

    closed = ClosedSession(opened, NOW - timedelta(days=1, hours=12), "unobserved")
    store.apply(snapshot, SessionChanges(closed=[closed]), {}, [], [])
    week, semester = (store.dashboard(r, NOW) for r in ("week", "semester"))
    assert grew(week, 1, "running_servers") == 0  # ended yesterday 00:00
    assert grew(week, 25, "running_servers") == 1
    counts = zip(
        semester_before["session_lengths"]["counts"],
        semester["session_lengths"]["counts"],
        strict=True,
    )
    assert [b - a for a, b in counts] == [0] * 7 + [1, 0, 0, 0]  # 12 h: in (8 h, 1 d]
    fresh = StatsStore(db, bucket_seconds=900)
    assert (week, semester) == (fresh.dashboard("week", NOW), fresh.dashboard("semester", NOW))
