"""What the stats service decides, as pure functions: no hub, no database, no clock.

The poller turns the hub's user list into a :class:`HubSnapshot`; everything else (which
sessions opened or closed, where activity moved, who joined or left a group, the metric values,
the usage report) is computed here from snapshots and stored rows, so it is tested directly.
All times are naive UTC datetimes, as stored.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from ..common.timeutil import parse_time

#: Rolling windows of the active-users metric: label -> length.
WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
SERVER_STATES = ("running", "spawn_pending", "stop_pending")
#: End reasons of a session.
STOPPED = "stopped"  # seen running, then seen gone within one poll gap
UNOBSERVED = "unobserved"  # gone while the service was not polling: ended = last seen
USER_DELETED = "user_deleted"
DAY = timedelta(days=1)
#: Longest usage report, so one request cannot ask for centuries of rows.
MAX_REPORT_DAYS = 3660
#: Days a report may name: the epoch our buckets align to, up to where a day's end (and the
#: 30-day default before it) is still a datetime; beyond, Python's dates overflow.
FIRST_REPORT_DAY = date(1970, 1, 1)
LAST_REPORT_DAY = date(9998, 12, 31)
USAGE_FIELDS = ("user", "sessions", "server_hours", "active_hours", "days_active")


def iso(when: datetime | None) -> str | None:
    """A naive UTC datetime in the hub's format, for JSON and CSV."""
    return None if when is None else when.isoformat() + "Z"


def floor_time(when: datetime, seconds: int) -> datetime:
    """The start of the ``seconds``-long bucket holding ``when`` (buckets align to the epoch)."""
    epoch = datetime(1970, 1, 1)
    offset = (when - epoch).total_seconds()
    return epoch + timedelta(seconds=offset - offset % seconds)


def day_start(when: datetime) -> datetime:
    return datetime(when.year, when.month, when.day)


# -- the hub's state --------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveServer:
    """A server the hub reports, in one of SERVER_STATES."""

    user: str
    server: str
    started: datetime | None
    last_activity: datetime | None
    state: str


@dataclass(frozen=True)
class HubSnapshot:
    """What one poll saw: every user's last activity, live servers and group memberships."""

    taken: datetime
    hub_version: str | None
    users: dict[str, datetime | None]
    servers: list[LiveServer]
    memberships: frozenset[tuple[str, str]]  # (group, user)


def server_state(model: Mapping[str, Any]) -> str | None:
    """running / spawn_pending / stop_pending from the hub's server model; None if stopped."""
    pending = model.get("pending")
    if pending == "spawn":
        return "spawn_pending"
    if pending == "stop":
        return "stop_pending"
    if model.get("ready"):
        return "running"
    return None


@dataclass
class SnapshotBuilder:
    """Reads the hub's ``GET /users`` models (with servers and groups) one at a time, so that
    a full sync of a large hub keeps what it needs and never the whole list of models."""

    users: dict[str, datetime | None] = field(default_factory=dict)
    servers: list[LiveServer] = field(default_factory=list)
    memberships: set[tuple[str, str]] = field(default_factory=set)

    def add(self, user: Mapping[str, Any]) -> None:
        name = user["name"]
        self.users[name] = parse_time(user.get("last_activity"))
        for server_name, model in (user.get("servers") or {}).items():
            state = server_state(model)
            if state is not None:
                self.servers.append(
                    LiveServer(
                        name,
                        server_name,
                        parse_time(model.get("started")),
                        parse_time(model.get("last_activity")),
                        state,
                    )
                )
        self.memberships.update((group, name) for group in user.get("groups") or [])

    def build(self, taken: datetime, hub_version: str | None) -> HubSnapshot:
        return HubSnapshot(
            taken, hub_version, self.users, self.servers, frozenset(self.memberships)
        )


def snapshot_from_users(
    users: Iterable[Mapping[str, Any]], taken: datetime, hub_version: str | None
) -> HubSnapshot:
    """A HubSnapshot from the hub's ``GET /users`` models (with servers and groups)."""
    builder = SnapshotBuilder()
    for user in users:
        builder.add(user)
    return builder.build(taken, hub_version)


def merge_active(synced: HubSnapshot, active: HubSnapshot) -> HubSnapshot:
    """The hub as a steady poll sees it: the last full sync, updated by the active users.

    ``active`` comes from ``GET /users?state=active``, which lists every user with a running
    or pending server, so its servers are all the live servers there are, and its users' last
    activity and groups are fresh. Users without a server keep what the full sync saw: a user
    created, deleted, renamed or active on the hub without a server since then shows at the
    next sync.
    """
    users = {**synced.users, **active.users}
    memberships = {(g, u) for g, u in synced.memberships if u not in active.users}
    return HubSnapshot(
        active.taken,
        active.hub_version,
        users,
        active.servers,
        frozenset(memberships | active.memberships),
    )


# -- sessions ---------------------------------------------------------------------------------


@dataclass
class OpenSession:
    """A session the store holds as open (no ``ended`` yet)."""

    id: int | None
    user: str
    server: str
    started: datetime
    last_activity: datetime | None
    last_seen: datetime


@dataclass(frozen=True)
class ClosedSession:
    session: OpenSession
    ended: datetime
    reason: str

    @property
    def duration(self) -> float:
        return max(0.0, (self.ended - self.session.started).total_seconds())


@dataclass
class SessionChanges:
    """What a poll changes: runs to open, runs that ended, open runs whose activity moved."""

    opened: list[LiveServer] = field(default_factory=list)
    closed: list[ClosedSession] = field(default_factory=list)
    moved: list[tuple[OpenSession, datetime]] = field(default_factory=list)


def _same_run(started: datetime, other: datetime) -> bool:
    # a database may round sub-second precision; two runs of one server never start 1 s apart
    return abs((started - other).total_seconds()) < 1


def reconcile_sessions(
    open_sessions: Iterable[OpenSession], snapshot: HubSnapshot, max_gap: timedelta
) -> SessionChanges:
    """Match stored open sessions with the hub's live servers.

    A live server continues the open session with the same user, server name and start time;
    so after a restart of the service or the hub, runs still going are neither lost nor counted
    twice. A server without ``started`` (hub just accepted a spawn) opens a session next poll.
    A session whose server is gone ends now if the previous poll saw it (``max_gap``), else at
    the last time it was seen, since it stopped while nobody watched.
    """
    changes = SessionChanges()
    live = {(s.user, s.server): s for s in snapshot.servers if s.started is not None}
    for session in open_sessions:
        server = live.get((session.user, session.server))
        if (
            server is not None
            and server.started is not None
            and _same_run(session.started, server.started)
        ):
            live.pop((session.user, session.server))
            if server.last_activity and (
                session.last_activity is None or server.last_activity > session.last_activity
            ):
                changes.moved.append((session, server.last_activity))
            continue
        if session.user not in snapshot.users:
            ended, reason = snapshot.taken, USER_DELETED
        elif snapshot.taken - session.last_seen <= max_gap:
            ended, reason = snapshot.taken, STOPPED
        else:
            ended, reason = session.last_seen, UNOBSERVED
        if server is not None and server.started is not None:
            # stopped and started again between two polls: the old run ended by the new start
            ended = max(session.last_seen, min(ended, server.started))
        changes.closed.append(ClosedSession(session, ended, reason))
    changes.opened.extend(live.values())
    return changes


# -- activity and groups ----------------------------------------------------------------------


def new_activity_buckets(
    recorded: Mapping[str, datetime], snapshot: HubSnapshot, bucket_seconds: int
) -> dict[str, datetime]:
    """Buckets to store: a user's last activity moved into a bucket not recorded yet.

    ``recorded`` is each user's latest stored bucket. Idle users add nothing, so storage grows
    with active user-time, not with users times polls.
    """
    marks: dict[str, datetime] = {}
    for user, last_activity in snapshot.users.items():
        if last_activity is None:
            continue
        bucket = floor_time(last_activity, bucket_seconds)
        previous = recorded.get(user)
        if previous is None or bucket > previous:
            marks[user] = bucket
    return marks


def membership_changes(
    open_memberships: Iterable[tuple[str, str]], current: frozenset[tuple[str, str]]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(joined, left) (group, user) pairs between the stored open memberships and now."""
    stored = set(open_memberships)
    return set(current) - stored, stored - set(current)


# -- metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The gauge values of one snapshot, which scrapes read without calling the hub."""

    servers: dict[tuple[str, str], int]  # (state, "default"|"named") -> count
    users: int
    active_users: dict[str, int]  # window label -> users
    unique_users: dict[str, int]  # "day" | "week" | "month" -> users
    group_active_users: dict[tuple[str, str], int]  # (group, window) -> users
    group_running_servers: dict[str, int]


def calendar_starts(now: datetime) -> dict[str, datetime]:
    """Start of the current UTC day, ISO week (Monday) and month."""
    today = day_start(now)
    return {
        "day": today,
        "week": today - timedelta(days=today.weekday()),
        "month": today.replace(day=1),
    }


def summarize(snapshot: HubSnapshot, groups: Iterable[str] = ()) -> Summary:
    """Metric values from a snapshot; per-group series only for the allow-listed ``groups``."""
    now = snapshot.taken
    servers = Counter((s.state, "named" if s.server else "default") for s in snapshot.servers)
    for state in SERVER_STATES:
        for kind in ("default", "named"):
            servers.setdefault((state, kind), 0)

    def active_since(since: datetime, members: Iterable[str]) -> int:
        return sum(
            1 for user in members if (t := snapshot.users.get(user)) is not None and t >= since
        )

    allowed = set(groups)
    members: dict[str, list[str]] = {group: [] for group in allowed}
    for group, user in snapshot.memberships:
        if group in allowed:
            members[group].append(user)
    running = Counter(s.user for s in snapshot.servers if s.state == "running")
    return Summary(
        servers=dict(servers),
        users=len(snapshot.users),
        active_users={k: active_since(now - w, snapshot.users) for k, w in WINDOWS.items()},
        unique_users={k: active_since(t, snapshot.users) for k, t in calendar_starts(now).items()},
        group_active_users={
            (group, k): active_since(now - w, users)
            for group, users in members.items()
            for k, w in WINDOWS.items()
        },
        group_running_servers={
            group: sum(running[user] for user in users) for group, users in members.items()
        },
    )


def server_seconds(servers: Iterable[LiveServer], since: datetime, now: datetime) -> float:
    """Server time the running servers added since the previous poll (``since``)."""
    total = 0.0
    for server in servers:
        if server.state == "running" and server.started is not None:
            total += max(0.0, (now - max(server.started, since)).total_seconds())
    return total


# -- usage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayUsage:
    sessions: int = 0
    server_seconds: float = 0.0
    active_seconds: float = 0.0


@dataclass(frozen=True)
class SessionSpan:
    user: str
    started: datetime
    ended: datetime | None


def daily_usage(
    day: datetime,
    sessions: Iterable[SessionSpan],
    buckets: Iterable[tuple[str, datetime]],
    bucket_seconds: int,
    now: datetime,
) -> dict[str, DayUsage]:
    """Each user's usage on the UTC day starting at ``day``: what the roll-up stores.

    Sessions count on the day they started; server time is the overlap with the day (an open
    session runs until ``now``); active time is the day's activity buckets, at most the server
    time of a user who ran a server that day (a bucket counts whole, though the server may have
    run for part of it). A user active on the hub without a server is still active.
    """
    end = day + DAY
    sessions_by: Counter[str] = Counter()
    seconds: defaultdict[str, float] = defaultdict(float)
    active: Counter[str] = Counter()
    for s in sessions:
        if day <= s.started < end:
            sessions_by[s.user] += 1
        overlap = (min(s.ended or now, end, now) - max(s.started, day)).total_seconds()
        if overlap > 0:
            seconds[s.user] += overlap
    for user, bucket in buckets:
        if day <= bucket < end:
            active[user] += bucket_seconds
    users = set(sessions_by) | set(seconds) | set(active)
    return {
        user: DayUsage(
            sessions_by[user],
            float(seconds[user]),
            float(min(active[user], seconds[user]) if seconds[user] else active[user]),
        )
        for user in users
    }


@dataclass(frozen=True)
class UserUsage:
    """One row of the usage report."""

    user: str
    sessions: int
    server_hours: float
    active_hours: float
    days_active: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "sessions": self.sessions,
            "server_hours": round(self.server_hours, 4),
            "active_hours": round(self.active_hours, 4),
            "days_active": self.days_active,
        }


def usage_from_day(per_user: Mapping[str, DayUsage]) -> list[UserUsage]:
    """Report rows for one day's usage (the live, not yet rolled-up day)."""
    return [
        UserUsage(user, u.sessions, u.server_seconds / 3600, u.active_seconds / 3600, 1)
        for user, u in per_user.items()
    ]


def merge_usage(rows: Iterable[UserUsage]) -> list[UserUsage]:
    """Sum report rows per user (rolled-up days plus today), sorted by server hours."""
    merged: dict[str, UserUsage] = {}
    for row in rows:
        old = merged.get(row.user)
        merged[row.user] = (
            row
            if old is None
            else UserUsage(
                row.user,
                old.sessions + row.sessions,
                old.server_hours + row.server_hours,
                old.active_hours + row.active_hours,
                old.days_active + row.days_active,
            )
        )
    return sorted(merged.values(), key=usage_key)


#: A user's memberships of one group: (joined, left or None while a member).
Memberships = Mapping[str, list[tuple[datetime, datetime | None]]]


def member_on(members: Memberships, user: str, day: datetime) -> bool:
    """Whether ``user`` was in the group at some time on ``day`` (membership is kept per day)."""
    return any(
        joined < day + DAY and (left is None or left > day)
        for joined, left in members.get(user, [])
    )


def usage_key(row: UserUsage) -> tuple[float, str]:
    """The report's order: most server hours first, then by name (code point order)."""
    return (-row.server_hours, row.user)


def live_rows(live: Mapping[datetime, Mapping[str, DayUsage]]) -> dict[str, list[UserUsage]]:
    """Each user's rows of the live (not rolled-up) days, in day order, for :func:`merge_usage`."""
    rows: dict[str, list[UserUsage]] = {}
    for day in sorted(live):
        for row in usage_from_day(live[day]):
            rows.setdefault(row.user, []).append(row)
    return rows


def merge_sorted_usage(
    rolled: Iterable[UserUsage],
    live: Mapping[str, list[UserUsage]],
    rolled_of_live: Mapping[str, UserUsage],
) -> Iterator[UserUsage]:
    """The whole report in :func:`merge_usage`'s order, lazily, without holding every user.

    ``rolled`` is the rolled-up rows in report order (the database sorts them), ``live`` the
    live days' rows per user and ``rolled_of_live`` the rolled-up rows of those users. Only the
    users with live usage are held and sorted here; the others stream through, read only as
    far as the caller reads (the dashboard's top 20 reads about 20 of them).
    """
    changed = sorted(
        (
            merge_usage([*([rolled_of_live[u]] if u in rolled_of_live else []), *rows])[0]
            for u, rows in live.items()
        ),
        key=usage_key,
    )
    return heapq.merge((r for r in rolled if r.user not in live), changed, key=usage_key)


@dataclass(frozen=True)
class GroupUsage:
    """A group's row of the dashboard: its current members and its usage in the range."""

    group: str
    members: int
    active_users: int
    server_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "members": self.members,
            "active_users": self.active_users,
            "server_hours": round(self.server_seconds / 3600, 3),
        }


def group_usage(
    groups: Iterable[tuple[str, int]],
    rolled: Mapping[str, tuple[int, float]],
    live: Mapping[datetime, Mapping[str, DayUsage]],
    memberships: Mapping[str, Memberships],
    active_before: set[tuple[str, str]],
) -> list[GroupUsage]:
    """Each group's active users and server time: rolled-up days plus live days.

    ``rolled``: group -> (users active on a rolled-up in-group day, server seconds then);
    ``memberships`` of the live days' users; ``active_before``: (group, user) pairs among them
    already counted active in ``rolled``, so a user active on both counts once, as in the
    per-group usage report.
    """
    rows = []
    for group, members in groups:
        active, seconds = rolled.get(group, (0, 0.0))
        newly: set[str] = set()
        member = memberships.get(group, {})
        for day in sorted(live):
            for user in member:
                usage = live[day].get(user)
                if usage is not None and member_on(member, user, day):
                    seconds += usage.server_seconds
                    if usage.active_seconds > 0 and (group, user) not in active_before:
                        newly.add(user)
        rows.append(GroupUsage(group, members, active + len(newly), seconds))
    return rows


@dataclass(frozen=True)
class UsageQuery:
    """A validated ``api/usage`` request: whole UTC days ``start`` <= day < ``end``."""

    start: datetime
    end: datetime
    user: str | None
    group: str | None
    format: str


def _parse_day(name: str, value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date like 2026-01-31, not {value!r}") from None
    if not FIRST_REPORT_DAY <= day <= LAST_REPORT_DAY:
        raise ValueError(
            f"{name} must be between {FIRST_REPORT_DAY} and {LAST_REPORT_DAY}, not {value!r}"
        )
    return day


def parse_usage_query(args: Mapping[str, str], today: date) -> UsageQuery:
    """Check ``from``, ``to`` (inclusive dates), ``user``, ``group``, ``format``.

    Raises ValueError with a message for the 400 answer. Defaults: the last 30 days, JSON.
    """
    unknown = set(args) - {"from", "to", "user", "group", "format"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}")
    last = _parse_day("to", args["to"]) if args.get("to") else today
    first = (
        _parse_day("from", args["from"])
        if args.get("from")
        else max(FIRST_REPORT_DAY, last - timedelta(days=29))
    )
    if first > last:
        raise ValueError(f"from ({first}) is after to ({last})")
    if (last - first).days >= MAX_REPORT_DAYS:
        raise ValueError(f"a report covers at most {MAX_REPORT_DAYS} days")
    fmt = args.get("format") or "json"
    if fmt not in {"json", "csv"}:
        raise ValueError(f"format must be json or csv, not {fmt!r}")
    return UsageQuery(
        datetime.combine(first, datetime.min.time()),
        datetime.combine(last, datetime.min.time()) + DAY,
        args.get("user") or None,
        args.get("group") or None,
        fmt,
    )


# -- dashboard --------------------------------------------------------------------------------


def active_per_step(
    start: datetime, step: timedelta, buckets: Iterable[tuple[str, datetime]]
) -> dict[int, int]:
    """Users with an activity bucket in each step (by index from ``start``); what the store
    asks its database for, as ``COUNT(DISTINCT user)`` per step."""
    users: defaultdict[int, set[str]] = defaultdict(set)
    for user, bucket in buckets:
        if bucket >= start:
            users[int((bucket - start) / step)].add(user)
    return {i: len(names) for i, names in users.items()}


def time_series(
    start: datetime,
    end: datetime,
    step: timedelta,
    sessions: Iterable[SessionSpan],
    active: Mapping[int, int],
    now: datetime,
) -> list[tuple[datetime, int, int]]:
    """(step start, active users, servers running at some time in the step) for each step;
    ``active`` is :func:`active_per_step`."""
    points = max(1, int((end - start) / step))
    running = [0] * points
    for s in sessions:
        first = max(0, int((s.started - start) / step))
        stop = s.ended or now
        last = min(points - 1, int((stop - start) / step))
        for i in range(first, last + 1):
            running[i] += 1
    return [(start + i * step, active.get(i, 0), running[i]) for i in range(points)]


#: Session-length buckets (seconds) of the histogram metric and the dashboard.
DURATION_BUCKETS = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)


def duration_histogram(durations: Iterable[float]) -> list[int]:
    """Counts per DURATION_BUCKETS interval, plus one for longer sessions."""
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for seconds in durations:
        i = next((i for i, edge in enumerate(DURATION_BUCKETS) if seconds <= edge), -1)
        counts[i] += 1
    return counts
