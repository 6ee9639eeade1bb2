"""Stats decisions without a hub or a database: sessions, activity, groups, metrics, reports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from itertools import islice

import pytest

from hubservices.common.timeutil import parse_time
from hubservices.stats import logic
from hubservices.stats.logic import (
    HubSnapshot,
    LiveServer,
    OpenSession,
    SessionSpan,
    UserUsage,
)

T0 = datetime(2026, 3, 4, 10, 0, 0)  # a Wednesday
GAP = timedelta(seconds=130)


def user(name: str, *, last: str | None = None, servers=None, groups=()) -> dict:
    return {
        "name": name,
        "last_activity": last,
        "servers": servers or {},
        "groups": list(groups),
    }


def server(started: str | None, *, ready=True, pending=None, last=None) -> dict:
    return {"started": started, "ready": ready, "pending": pending, "last_activity": last}


def snap(taken: datetime, servers: list[LiveServer], users=None, memberships=()) -> HubSnapshot:
    names = users if users is not None else {s.user: s.last_activity for s in servers}
    return HubSnapshot(taken, "5.3.0", dict(names), servers, frozenset(memberships))


def live(user: str, started: datetime, server: str = "", *, last=None, state="running"):
    return LiveServer(user, server, started, last, state)


def opened(user: str, started: datetime, server: str = "", *, seen=T0, last=None):
    return OpenSession(1, user, server, started, last, seen)


def test_snapshot_reads_states_times_and_groups() -> None:
    users = [
        user(
            "ann",
            last="2026-03-04T09:59:00.5Z",
            servers={
                "": server("2026-03-04T09:00:00Z"),
                "gpu": server("2026-03-04T09:30:00+00:00", ready=False, pending="spawn"),
                "old": server("2026-03-04T08:00:00Z", pending="stop"),
                "off": server(None, ready=False),
            },
            groups=["course1"],
        ),
        user("bob"),
    ]
    s = logic.snapshot_from_users(users, T0, "5.3.0")
    assert s.users == {"ann": datetime(2026, 3, 4, 9, 59, 0, 500000), "bob": None}
    states = {x.server: x.state for x in s.servers}
    assert states == {"": "running", "gpu": "spawn_pending", "old": "stop_pending"}
    assert next(x for x in s.servers if x.server == "gpu").started == datetime(2026, 3, 4, 9, 30)
    assert s.memberships == {("course1", "ann")}


def test_new_server_opens_a_session_and_the_same_run_continues_it() -> None:
    start = T0 - timedelta(minutes=5)
    first = logic.reconcile_sessions([], snap(T0, [live("ann", start)]), GAP)
    assert [(s.user, s.started) for s in first.opened] == [("ann", start)]

    later = T0 + timedelta(minutes=1)
    moved = start + timedelta(minutes=3)
    again = logic.reconcile_sessions(
        [opened("ann", start)], snap(later, [live("ann", start, last=moved)]), GAP
    )
    assert again.opened == [] and again.closed == []
    assert [(s.user, t) for s, t in again.moved] == [("ann", moved)]


def test_restart_reconciles_instead_of_duplicating() -> None:
    """After a restart the stored open session meets the same run: nothing opens or closes."""
    start = T0 - timedelta(hours=2)
    stored = opened("ann", start, seen=T0 - timedelta(minutes=10), last=start)
    # the database rounded microseconds away; still the same run
    hub = live("ann", start + timedelta(microseconds=400), last=start)
    changes = logic.reconcile_sessions([stored], snap(T0, [hub]), GAP)
    assert changes.opened == [] and changes.closed == [] and changes.moved == []


def test_stopped_server_ends_now_or_when_last_seen() -> None:
    start = T0 - timedelta(hours=1)
    watched = opened("ann", start, seen=T0 - timedelta(seconds=60))
    unwatched = opened("bob", start, seen=T0 - timedelta(hours=3) + timedelta(hours=2.5))
    gone = opened("cy", start, seen=T0 - timedelta(seconds=60))
    s = snap(T0, [], users={"ann": None, "bob": None})
    closed = {
        c.session.user: c
        for c in logic.reconcile_sessions([watched, unwatched, gone], s, GAP).closed
    }
    assert (closed["ann"].ended, closed["ann"].reason) == (T0, logic.STOPPED)
    assert (closed["bob"].ended, closed["bob"].reason) == (unwatched.last_seen, logic.UNOBSERVED)
    assert closed["cy"].reason == logic.USER_DELETED
    assert closed["ann"].duration == 3600


def test_restarted_between_polls_closes_the_old_run_and_opens_the_new() -> None:
    old = T0 - timedelta(hours=1)
    new = T0 - timedelta(seconds=20)
    changes = logic.reconcile_sessions(
        [opened("ann", old, seen=T0 - timedelta(seconds=60))], snap(T0, [live("ann", new)]), GAP
    )
    assert [(c.ended, c.reason) for c in changes.closed] == [(new, logic.STOPPED)]
    assert [s.started for s in changes.opened] == [new]


def test_spawn_without_start_time_waits_and_named_servers_are_separate() -> None:
    pending = LiveServer("ann", "", None, None, "spawn_pending")
    named = live("ann", T0, "gpu")
    changes = logic.reconcile_sessions([], snap(T0, [pending, named]), GAP)
    assert [(s.user, s.server) for s in changes.opened] == [("ann", "gpu")]


def test_activity_is_stored_only_where_it_moved() -> None:
    s = snap(
        T0,
        [],
        users={
            "ann": T0 - timedelta(minutes=1),  # bucket 09:45, already recorded
            "bob": T0 + timedelta(minutes=1),  # moved into a new bucket
            "cy": None,  # never active
            "dee": T0 - timedelta(days=3),  # first time we see dee
        },
    )
    recorded = {"ann": datetime(2026, 3, 4, 9, 45), "bob": datetime(2026, 3, 4, 9, 45)}
    marks = logic.new_activity_buckets(recorded, s, 900)
    assert marks == {"bob": T0, "dee": datetime(2026, 3, 1, 10, 0)}


def test_membership_changes() -> None:
    joined, left = logic.membership_changes(
        {("c1", "ann"), ("c1", "bob")}, frozenset({("c1", "ann"), ("c2", "bob")})
    )
    assert joined == {("c2", "bob")} and left == {("c1", "bob")}


def test_summary_windows_states_and_allow_listed_groups() -> None:
    users = {
        "ann": T0 - timedelta(minutes=30),
        "bob": T0 - timedelta(hours=5),
        "cy": T0 - timedelta(days=3),  # Sunday: this month, not this week
        "dee": T0 - timedelta(days=60),
        "eve": None,
    }
    servers = [
        live("ann", T0),
        live("ann", T0, "gpu"),
        live("bob", T0, state="spawn_pending"),
        live("cy", T0, "x", state="stop_pending"),
    ]
    s = logic.summarize(
        snap(T0, servers, users, {("c1", "ann"), ("c1", "bob"), ("secret", "cy")}), ["c1"]
    )
    assert s.users == 5
    assert s.active_users == {"1h": 1, "24h": 2, "7d": 3, "30d": 3, "90d": 4}
    assert s.unique_users == {"day": 2, "week": 2, "month": 3}
    assert s.servers[("running", "default")] == 1
    assert s.servers[("running", "named")] == 1
    assert s.servers[("spawn_pending", "default")] == 1
    assert s.servers[("stop_pending", "named")] == 1
    assert s.servers[("stop_pending", "default")] == 0
    assert s.group_running_servers == {"c1": 2}
    assert s.group_active_users[("c1", "24h")] == 2
    assert {g for g, _ in s.group_active_users} == {"c1"}  # not-allowed groups stay private


def test_server_seconds_since_previous_poll() -> None:
    servers = [live("ann", T0 - timedelta(hours=1)), live("bob", T0 - timedelta(seconds=30))]
    pending = [live("cy", T0 - timedelta(hours=1), state="spawn_pending")]
    assert logic.server_seconds(servers + pending, T0 - timedelta(seconds=60), T0) == 90


def test_daily_usage_splits_sessions_at_midnight() -> None:
    day = datetime(2026, 3, 4)
    spans = [
        SessionSpan("ann", day - timedelta(hours=2), day + timedelta(hours=1)),  # from yesterday
        SessionSpan("ann", day + timedelta(hours=23), None),  # still open
        SessionSpan("bob", day + timedelta(hours=5), day + timedelta(hours=6)),
    ]
    buckets = [("ann", day + timedelta(hours=1)), ("cy", day), ("cy", day + timedelta(days=1))]
    now = day + timedelta(days=1, hours=3)
    usage = logic.daily_usage(day, spans, buckets, 900, now)
    assert usage["ann"] == logic.DayUsage(1, 7200.0, 900.0)
    assert usage["bob"] == logic.DayUsage(1, 3600.0, 0.0)
    # active on the hub without a server: active all the same
    assert usage["cy"] == logic.DayUsage(0, 0.0, 900.0)
    # active time is at most server time: a whole bucket against a short server
    short = [SessionSpan("dee", day + timedelta(minutes=1), day + timedelta(minutes=6))]
    dee = logic.daily_usage(day, short, [("dee", day)], 900, now)["dee"]
    assert dee.active_seconds == dee.server_seconds == 300.0
    # today, an open session counts until now
    today = logic.daily_usage(day + timedelta(days=1), spans, [], 900, now)
    assert today["ann"].server_seconds == 3 * 3600


def test_merge_usage_sums_per_user_and_sorts() -> None:
    rows = [UserUsage("a", 1, 1.0, 0.5, 1), UserUsage("b", 2, 3.0, 1.0, 2)]
    rows.append(UserUsage("a", 1, 2.5, 0.25, 1))
    merged = logic.merge_usage(rows)
    assert merged == [UserUsage("a", 2, 3.5, 0.75, 2), UserUsage("b", 2, 3.0, 1.0, 2)]


def test_usage_query_defaults_and_inclusive_days() -> None:
    q = logic.parse_usage_query({}, date(2026, 3, 4))
    assert (q.start, q.end, q.format) == (datetime(2026, 2, 3), datetime(2026, 3, 5), "json")
    q = logic.parse_usage_query(
        {"from": "2026-01-01", "to": "2026-01-31", "group": "c1", "format": "csv"},
        date(2026, 3, 4),
    )
    assert (q.start, q.end, q.group, q.user) == (
        datetime(2026, 1, 1),
        datetime(2026, 2, 1),
        "c1",
        None,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"from": "yesterday"}, "from must be a date like 2026-01-31, not 'yesterday'"),
        ({"to": "2026-13-01"}, "to must be a date"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "from (2026-02-01) is after to (2026-01-01)"),
        ({"from": "1990-01-01"}, "at most 3660 days"),
        ({"from": "0001-01-01"}, "from must be between 1970-01-01 and 9998-12-31, not '0001-"),
        ({"to": "9999-12-31"}, "to must be between 1970-01-01 and 9998-12-31, not '9999-12-31'"),
        ({"to": "10000-01-01"}, "to must be a date like 2026-01-31, not '10000-01-01'"),
        ({"from": "2026-01-01\x00"}, "from must be a date like 2026-01-31"),
        ({"format": "xml"}, "format must be json or csv, not 'xml'"),
        ({"form": "2026-01-01"}, "unknown parameter 'form'"),
    ],
)
def test_bad_usage_query_says_why(args: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        logic.parse_usage_query(args, date(2026, 3, 4))


@pytest.mark.parametrize(
    ("args", "first", "last"),
    [
        ({"from": "9998-12-01", "to": "9998-12-31"}, date(9998, 12, 1), date(9998, 12, 31)),
        ({"to": "1970-01-05"}, date(1970, 1, 1), date(1970, 1, 5)),  # 30 days back stop at 1970
    ],
)
def test_usage_query_at_the_edges_of_the_calendar(
    args: dict[str, str], first: date, last: date
) -> None:
    q = logic.parse_usage_query(args, date(2026, 3, 4))
    assert (q.start.date(), q.end.date()) == (first, last + timedelta(days=1))


def test_time_series_counts_active_users_and_running_servers_per_step() -> None:
    start, step = datetime(2026, 3, 4), timedelta(hours=1)
    spans = [
        SessionSpan("ann", start + timedelta(minutes=30), start + timedelta(hours=2, minutes=1)),
        SessionSpan("bob", start - timedelta(days=1), None),
    ]
    buckets = [("ann", start), ("ann", start + timedelta(minutes=15)), ("bob", start)]
    active = logic.active_per_step(start, step, buckets)
    assert active == {0: 2}
    series = logic.time_series(start, start + 4 * step, step, spans, active, start + 3 * step)
    assert series == [
        (start, 2, 2),
        (start + step, 0, 2),
        (start + 2 * step, 0, 2),
        (start + 3 * step, 0, 1),
    ]


def test_duration_histogram() -> None:
    counts = logic.duration_histogram([10, 300, 301, 4000, 10**7])
    assert counts[0] == 2 and counts[1] == 1 and counts[4] == 1 and counts[-1] == 1
    assert sum(counts) == 5


def test_floor_time_and_iso() -> None:
    assert logic.floor_time(datetime(2026, 3, 4, 10, 14, 59), 900) == datetime(2026, 3, 4, 10)
    assert logic.iso(datetime(2026, 3, 4, 10)) == "2026-03-04T10:00:00Z"
    assert parse_time("2026-03-04T11:00:00+01:00") == datetime(2026, 3, 4, 10)


def test_the_top_of_the_merged_report_reads_only_the_rolled_rows_it_shows() -> None:
    """The dashboard's top users: the database hands rolled rows in report order; a live day
    lifts u0500 to the top, yet of the 1,000 users only the top few are read."""
    rolled_rows = [UserUsage(f"u{i:04d}", 1, 1000.0 - i, 1.0, 1) for i in range(1000)]
    live = logic.live_rows(
        {
            datetime(2026, 3, 4): {
                "u0500": logic.DayUsage(1, 3600.0 * 600, 0.0),
                "u0001": logic.DayUsage(1, 3600.0 * 2, 0.0),
                "new": logic.DayUsage(1, 3600.0 * 5, 3600.0),
            }
        }
    )
    of_live = {r.user: r for r in rolled_rows if r.user in live}
    read = 0

    def rolled() -> Iterator[UserUsage]:
        nonlocal read
        for row in rolled_rows:
            read += 1
            yield row

    top = list(islice(logic.merge_sorted_usage(rolled(), live, of_live), 5))
    everything = logic.merge_usage([*rolled_rows, *(r for rows in live.values() for r in rows)])
    assert top == everything[:5]
    assert [r.user for r in top] == ["u0500", "u0001", "u0000", "u0002", "u0003"]
    assert read == 4  # u0000, u0001 (live: merged apart, skipped), u0002, u0003


def test_merge_sorted_usage_is_the_whole_report_in_order() -> None:
    rolled_rows = [UserUsage(f"u{i}", 1, 10.0 - i, 1.0, 1) for i in range(10)]
    live = logic.live_rows({datetime(2026, 3, 4): {"u7": logic.DayUsage(1, 3600.0 * 8, 0.0)}})
    merged = logic.merge_sorted_usage(
        iter(rolled_rows), live, {r.user: r for r in rolled_rows if r.user == "u7"}
    )
    assert list(merged) == logic.merge_usage([*rolled_rows, *live["u7"]])


def test_a_steady_poll_updates_the_active_users_and_keeps_the_rest_of_the_sync() -> None:
    t0, t1 = datetime(2026, 3, 2, 9), datetime(2026, 3, 2, 9, 5)
    synced = logic.snapshot_from_users(
        [
            user(
                "ann",
                last="2026-03-02T09:00:00Z",
                servers={"": server("2026-03-02T09:00:00Z")},
                groups=["c1"],
            ),
            user("bob", last="2026-03-01T12:00:00Z", groups=["c1", "c2"]),
        ],
        t0,
        "5.3.0",
    )
    active = logic.snapshot_from_users(
        [
            user(
                "cat",
                last="2026-03-02T09:04:00Z",
                servers={"": server("2026-03-02T09:04:00Z")},
                groups=["c2"],
            )
        ],
        t1,
        "5.3.1",
    )
    merged = logic.merge_active(synced, active)
    assert merged.taken == t1 and merged.hub_version == "5.3.1"
    assert [(s.user, s.server) for s in merged.servers] == [("cat", "")]  # ann's server is gone
    assert merged.users == {
        "ann": datetime(2026, 3, 2, 9),
        "bob": datetime(2026, 3, 1, 12),
        "cat": datetime(2026, 3, 2, 9, 4),
    }
    assert merged.memberships == {("c1", "ann"), ("c1", "bob"), ("c2", "bob"), ("c2", "cat")}
