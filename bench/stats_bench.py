"""Stats service benchmark (issue 4): one run, figures printed as a Markdown table.

Every part runs once per database of ``--db`` (SQLite, a PostgreSQL the benchmark starts, or
both: the default), its figures side by side in one table:

- ``poll``: a real hub (its own database: SQLite) with 10,000 users (in 10 groups) and 2,000
  running LightSpawner servers, a hub per database. Wall time and hub requests of each poll (a
  first full sync: opens every session; a full sync with nothing changed; a steady poll: users
  with a server), by our Poller in this process on a fresh database, and the steady poll time
  the stats service itself (on a database of its own) reports under that hub (least-privilege
  token). Scrape latency p50 / p99 of ``/services/stats/metrics`` next to the hub's own
  ``/hub/metrics``, both through the proxy, sequentially, in the same run.
- ``storage``: bytes per active user-day, from a simulated day of one-minute polls (no hub).
- ``report``: a simulated year (``--report-users`` x ``--report-days`` of roll-ups in
  ``--report-groups`` groups, raw sessions of the ``--report-active`` share of users, the last
  day rolled up by the store): the time to sum every range's rolled-up days (what the poller
  does in the background after the day's roll-up), the usage report (all users, one group), the
  dashboard of every range (p50/p95 of ``--dashboard-runs`` requests), and the CSV and JSON
  exports as ``api/usage`` streams them (time, size, pieces, peak RSS growth of this process).

Run from the project root: ``.venv/bin/python -m bench.stats_bench [--only poll|storage|report]
[--db sqlite|postgresql|both]``.
Targets: poll of 10k users under 5 s; scrape p99 no worse than the hub's; report under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, insert

from bench.common import (
    DATABASES,
    Databases,
    add_db_option,
    chosen_databases,
    database_bytes,
    percentile,
    run_on_hub,
)
from hubservices.common.db import Database
from hubservices.common.hubapi import HubAPI
from hubservices.stats import handlers, logic
from hubservices.stats import poller as poller_module
from hubservices.stats.app import Stats
from hubservices.stats.logic import DAY
from hubservices.stats.metrics import PollMetrics
from hubservices.stats.models import (
    ActivityBucket,
    DailyUsage,
    GroupMembership,
    Meta,
    ServerSession,
)
from hubservices.stats.poller import Poller
from hubservices.stats.store import RANGES, ROLLED_UNTIL, StatsStore
from tests.harness.hub import Hub

HUB_CONFIG = """
c.JupyterHub.spawner_class = "tests.harness.lightspawner.LightSpawner"
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.authenticate_prometheus = False
c.JupyterHub.cleanup_servers = True
"""
#: Each measurement's result by database (a DATABASES key), in the order first measured.
figures: dict[str, dict[str, str]] = {}


def figure(name: str, value: str, db: str) -> None:
    figures.setdefault(name, {})[db] = value
    print(f"[{DATABASES[db]}] {name}: {value}", flush=True)


def open_db(url: str) -> Database:
    db = Database(
        url,
        migrations="hubservices.stats.migrations",
        version_table="alembic_version_stats",
    )
    db.upgrade()
    return db


class HubCost:
    """Counts the requests our hub client sends and the seconds spent waiting for answers
    (the client's request observer), so a poll's time splits into the hub's and ours."""

    def __init__(self) -> None:
        self.requests = 0
        self.seconds = 0.0

    def __call__(self, method: str, route: str, code: str, seconds: float) -> None:
        self.requests += 1
        self.seconds += seconds


def scrape_samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def populate(api: HubAPI, users: int, servers: int, groups: int, db: str) -> None:
    names = [f"u{i:05d}" for i in range(users)]
    t = time.monotonic()
    for i in range(0, users, 1000):
        await api.create_users(names[i : i + 1000])
    size = users // groups
    for g in range(groups):
        await api.create_group(f"course{g}")
        await api.add_group_users(f"course{g}", names[g * size : (g + 1) * size])
    figure("setup: users and groups created in", f"{time.monotonic() - t:.1f} s", db)
    t = time.monotonic()
    await asyncio.gather(*(api.start_server(name) for name in names[:servers]))
    figure("setup: servers started in", f"{time.monotonic() - t:.1f} s", db)


def bench_poll(args: argparse.Namespace, workdir: Path, dbs: Databases, db: str) -> None:
    """The poll and scrape figures on a real hub, stopped (and checked) whatever happens; our
    poller and the stats service each on a fresh database of kind ``db``."""
    service_db = dbs.new(db, "stats_service")
    hub = Hub(
        workdir / f"hub-{db}",
        services=["stats"],
        # a full sync a minute: its first comes before the users exist, and the service's own
        # steady poll is measured once a full sync has seen them all (default: an hour later)
        service_args={
            "stats": ["--poll-interval=20", "--sync-interval=60", f"--db-url={service_db}"]
        },
        extra_config=HUB_CONFIG,
    )
    poll_db = dbs.new(db, "stats_poll")
    run = functools.partial(poll_on_hub, args, hub, poll_db, db)
    run_on_hub(hub, hub.workdir, run, keep=args.keep)


async def poll_on_hub(args: argparse.Namespace, hub: Hub, db_url: str, kind: str) -> None:
    async with HubAPI(hub.api_url, hub.admin_token, concurrency=50) as api:
        await populate(api, args.users, args.servers, groups=10, db=kind)
        stats_token = await api.create_token("admin", scopes=["access:services!service=stats"])
        # the service's own scopes: an admin's token gets larger user models, which the hub
        # takes about a third longer to answer (4.23 s against 3.09 s at 10,000 users)
        poll_token = await api.create_token("admin", scopes=Stats().required_scopes())
    auth = {"Authorization": f"Bearer {stats_token}"}
    cost = HubCost()
    async with (
        HubAPI(hub.api_url, poll_token, observer=cost, page_size=200) as client,
        httpx.AsyncClient(timeout=30) as http,
    ):
        db = open_db(db_url)
        store = StatsStore(db, bucket_seconds=900, retention=None)
        metrics = PollMetrics(CollectorRegistry())
        poller = Poller(client, store, metrics, interval=60, sync_interval=3600, groups={"course0"})
        first = f"the first (opens {args.servers:,} sessions, {args.users:,} memberships)"
        polls = [
            (f"full sync, {first}", True),
            ("full sync, nothing changed", True),
            ("steady poll (users with a running or pending server)", False),
        ]
        for label, full in polls:
            if full:
                poller.synced = None  # the next poll is a full sync
            await after_service_poll(http, hub, auth)
            before, waited, t = cost.requests, cost.seconds, time.monotonic()
            await poller.poll()
            elapsed = time.monotonic() - t
            assert metrics.poll_errors._value.get() == 0, "poll failed"
            figure(
                f"poll of {args.users:,} users, {args.servers:,} servers: {label}",
                f"{elapsed:.2f} s ({cost.seconds - waited:.2f} s waiting for the hub), "
                f"{cost.requests - before} hub requests",
                kind,
            )
        assert poller.last is not None
        assert poller.last.summary.users == args.users + 1
        db.dispose()

    with httpx.Client(timeout=30) as http:
        await service_poll_time(http, hub, auth, args.users + 1, kind)
        for name, url, headers in [
            ("stats /services/stats/metrics", hub.service_url("stats", "metrics"), auth),
            ("hub /hub/metrics", f"{hub.url}/hub/metrics", {}),
        ]:
            http.get(url, headers=headers).raise_for_status()  # warm the token cache
            times = []
            size = 0
            for _ in range(args.scrapes):
                t = time.perf_counter()
                r = http.get(url, headers=headers)
                times.append(time.perf_counter() - t)
                r.raise_for_status()
                size = len(r.content)
            figure(
                f"scrape {name} ({args.scrapes} sequential)",
                f"p50 {percentile(times, 50) * 1000:.1f} ms, "
                f"p99 {percentile(times, 99) * 1000:.1f} ms ({size:,} bytes)",
                kind,
            )


def service_polls(kind: str, sample: str = "count") -> tuple[str, tuple]:
    """The key of the stats service's poll histogram sample for polls of ``kind``."""
    return (f"hubservices_stats_poll_duration_seconds_{sample}", (("kind", kind),))


async def after_service_poll(
    http: httpx.AsyncClient, hub: Hub, auth: dict, timeout: float = 60
) -> None:
    """Wait until the stats service (polling every 20 s) has just finished a poll, so that the
    hub serves the benchmark's poll alone: a poll overlapping the service's takes up to twice
    as long, which is the hub's single event loop serving two, not the poller."""
    url = hub.service_url("stats", "metrics")

    async def polls() -> float:
        r = await http.get(url, headers=auth)
        r.raise_for_status()
        samples = scrape_samples(r.text)
        return sum(samples.get(service_polls(kind), 0) for kind in ("active", "full"))

    seen = await polls()
    deadline = time.monotonic() + timeout
    while await polls() == seen:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stats service did not finish a poll within {timeout} s")
        await asyncio.sleep(0.2)


POLL_BY_SERVICE = "steady poll by the stats service itself (its histogram)"


async def service_poll_time(
    http: httpx.Client, hub: Hub, auth: dict, users: int, kind: str
) -> None:
    """The steady poll time the stats service reports, once its polls see every user."""
    url = hub.service_url("stats", "metrics")
    duration = service_polls("active", "sum")
    count = service_polls("active")
    deadline = time.monotonic() + 120
    first = None
    while time.monotonic() < deadline:
        m = scrape_samples(http.get(url, headers=auth).text)
        if m.get(("hubservices_stats_users", ())) == users:
            if first is None:
                first = m
            elif m.get(count, 0) > first.get(count, 0):
                polls = m[count] - first.get(count, 0)
                seconds = (m[duration] - first.get(duration, 0)) / polls
                figure(POLL_BY_SERVICE, f"{seconds:.2f} s", kind)
                return
        await asyncio.sleep(1)
    figure(POLL_BY_SERVICE, "not measured (no poll within 120 s)", kind)


class DayHub:
    """Hands the poller a simulated hub: ``active`` users working 09:00-17:00, with servers
    (and, asked for ``state=active``, only those)."""

    hub_version = "bench"

    def __init__(self, users: int, active: int) -> None:
        self.users, self.active = users, active
        self.now = datetime(2026, 3, 2)

    async def paginate(self, *segments: str, params: Any = None) -> AsyncIterator[dict]:
        working = 9 <= self.now.hour < 17
        start = logic.iso(self.now.replace(hour=9, minute=0))
        only_active = (params or {}).get("state") == "active"
        for i in range(self.users):
            busy = working and i < self.active
            if only_active and not busy:
                continue
            last = self.now if busy else datetime(2026, 1, 1)
            servers = {}
            if busy:
                servers[""] = {
                    "started": start,
                    "ready": True,
                    "pending": None,
                    "last_activity": logic.iso(last),
                }
            yield {
                "name": f"u{i}",
                "last_activity": logic.iso(last),
                "servers": servers,
                "groups": [f"course{i % 10}"],
            }


async def bench_storage(url: str, kind: str) -> None:
    db = open_db(url)
    store = StatsStore(db, bucket_seconds=900, retention=None)
    hub = DayHub(users=1000, active=200)
    metrics = PollMetrics(CollectorRegistry())
    poller = Poller(hub, store, metrics, interval=60, sync_interval=3600, groups=set())
    with mock.patch.object(poller_module, "utcnow", lambda: hub.now):
        await simulate_day(poller, hub, url, kind)


async def simulate_day(poller: Poller, hub: DayHub, url: str, kind: str) -> None:
    """A first poll, then a day of one-minute polls, then the next day's roll-up; the growth."""
    store = poller.store
    db = store.db
    await poller.poll()  # the first poll stores every user's membership and old activity
    db.dispose()
    before = database_bytes(url, vacuum=True)
    db = open_db(url)
    store.db = db
    t = time.monotonic()
    for _ in range(24 * 60):
        hub.now += timedelta(minutes=1)
        await poller.poll()
    elapsed = time.monotonic() - t
    hub.now += timedelta(days=1)  # next day: roll-up of the simulated day
    await poller.poll()
    db.dispose()
    raw = database_bytes(url) - before
    grown = database_bytes(url, vacuum=True) - before
    dead = "" if raw == grown else f", {raw:,} before VACUUM FULL"
    figure(
        "storage: a simulated day (1,000 users, 200 active 8 h, 1,440 polls)",
        f"{grown / hub.active:,.0f} bytes per active user-day (database grew {grown:,} "
        f"bytes{dead}; polls took {elapsed / 1440 * 1000:.1f} ms each)",
        kind,
    )


def bench_report(args: argparse.Namespace, url: str, kind: str) -> None:
    """A year of roll-ups for every user, raw sessions for the active share of them (all year)
    and their activity for the last week; then reports, the dashboard and the CSV export."""
    db = open_db(url)
    store = StatsStore(db, bucket_seconds=900, retention=None)
    days, users = args.report_days, args.report_users
    first = datetime(2025, 1, 1)
    now = first + timedelta(days=days, hours=12)
    t = time.monotonic()
    fill_history(db, first, now, users, args.report_groups, args.report_active)
    assert store.roll_up(now) == 1
    figure(
        f"setup: {days} days x {users:,} users ({args.report_active:.0%} active) stored in",
        f"{time.monotonic() - t:.1f} s",
        kind,
    )
    t = time.perf_counter()
    store.warm_dashboard(now)  # what the poller starts in the background after the roll-up
    figure(
        "dashboard sums of every range after a roll-up (once a day, in the background)",
        f"{time.perf_counter() - t:.1f} s",
        kind,
    )
    year = {"from": first.date().isoformat(), "to": (now - timedelta(days=1)).date().isoformat()}
    for label, extra in [("all users", {}), ("one group", {"group": "course3"})]:
        query = logic.parse_usage_query({**year, **extra}, now.date())
        times = []
        for _ in range(5):
            t = time.perf_counter()
            rows = store.usage(query, now)
            times.append(time.perf_counter() - t)
        figure(
            f"usage report over {days} days x {users:,} users, {label}",
            f"{statistics.median(times) * 1000:.0f} ms median of 5 ({len(rows)} rows)",
            kind,
        )
    for range_name in RANGES:
        times = []
        for _ in range(args.dashboard_runs):
            t = time.perf_counter()
            store.dashboard(range_name, now)
            times.append(time.perf_counter() - t)
        figure(
            f"dashboard, range {range_name}, {users:,} users in {args.report_groups} groups",
            f"p50 {percentile(times, 50) * 1000:.0f} ms, p95 {percentile(times, 95) * 1000:.0f} ms"
            f" ({args.dashboard_runs} runs)",
            kind,
        )
    for fmt in ("csv", "json"):
        query = logic.parse_usage_query({**year, "format": fmt}, now.date())
        base = reset_peak_rss()
        t = time.perf_counter()
        size = chunks = 0
        for chunk in usage_export(store, query, now):
            size += len(chunk.encode())
            chunks += 1
        elapsed = time.perf_counter() - t
        figure(
            f"usage export ({fmt}) of {users:,} users x {days} days, store and encoding",
            f"{elapsed:.2f} s, {size / 2**20:.1f} MiB in {chunks:,} chunks, "
            f"peak RSS +{(peak_rss() - base) / 2**20:.0f} MiB "
            f"(process {peak_rss() / 2**20:.0f} MiB)",
            kind,
        )
    db.dispose()


def fill_history(
    db: Database, first: datetime, now: datetime, users: int, groups: int, active: float
) -> None:
    """Roll-ups for every user and day but yesterday (left to the store's roll-up); sessions
    (09:00, 4-8 h) of the active users every day, today's still open; their activity buckets
    over the last 8 days."""
    names = [f"u{u:05d}" for u in range(users)]
    busy = names[: max(1, int(users * active))]
    today = logic.day_start(now)
    with db.session() as session:
        day = first
        while day < today:
            d = (day - first).days
            session.execute(
                insert(DailyUsage),
                [
                    {
                        "day": day,
                        "user": name,
                        "sessions": 1 + (u + d) % 3,
                        "server_seconds": 3600.0 * (1 + (u * d) % 5),
                        "active_seconds": 900.0 * (1 + (u + d) % 8),
                    }
                    for u, name in enumerate(names)
                ],
            )
            day += DAY
        day = first
        while day <= today:
            start = day + timedelta(hours=9)
            session.execute(
                insert(ServerSession),
                [
                    {
                        "user": name,
                        "server": "",
                        "started": start,
                        "ended": None if day == today else start + timedelta(hours=4 + u % 5),
                        "end_reason": None if day == today else "stopped",
                        "last_activity": start,
                        "last_seen": min(now, start + timedelta(hours=4 + u % 5)),
                    }
                    for u, name in enumerate(busy)
                ],
            )
            if today - day <= timedelta(days=8):
                until = min(now, start + timedelta(hours=8))
                marks = int((until - start) / timedelta(minutes=15))
                session.execute(
                    insert(ActivityBucket),
                    [
                        {"user": name, "bucket": start + i * timedelta(minutes=15)}
                        for name in busy
                        for i in range(marks)
                    ],
                )
            day += DAY
        session.add_all(
            GroupMembership(group=f"course{u % groups}", user=name, joined=first)
            for u, name in enumerate(names)
        )
        # yesterday is rolled up by the store, from the raw rows, as the poller would
        session.add(Meta(key=ROLLED_UNTIL, value=(today - DAY).isoformat()))
        session.execute(delete(DailyUsage).where(DailyUsage.day == today - DAY))


def usage_export(store: StatsStore, query: logic.UsageQuery, now: datetime) -> Iterator[str]:
    """What ``api/usage`` writes, chunk by chunk, without the HTTP around it."""
    yield from handlers.usage_export(query, store.usage_rows(query, now))


def peak_rss() -> int:
    """This process's peak resident set size (VmHWM), bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5); return it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return peak_rss()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["poll", "storage", "report"])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--servers", type=int, default=2_000)
    parser.add_argument("--scrapes", type=int, default=300)
    parser.add_argument("--report-users", type=int, default=1_000)
    parser.add_argument("--report-days", type=int, default=365)
    parser.add_argument("--report-groups", type=int, default=10)
    parser.add_argument("--report-active", type=float, default=0.1, help="share with servers")
    parser.add_argument("--dashboard-runs", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the hub's directory and log")
    add_db_option(parser)
    args = parser.parse_args()
    kinds = chosen_databases(args)
    with tempfile.TemporaryDirectory(prefix="stats-bench-") as tmp, Databases(Path(tmp)) as dbs:
        workdir = Path(tmp)
        for kind in kinds:
            if args.only in (None, "report"):
                bench_report(args, dbs.new(kind, "stats_report"), kind)
            if args.only in (None, "storage"):
                asyncio.run(bench_storage(dbs.new(kind, "stats_storage"), kind))
        for kind in kinds:
            if args.only in (None, "poll"):
                bench_poll(args, workdir, dbs, kind)
    print("\n| measurement | " + " | ".join(DATABASES[k] for k in kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, values in figures.items():
        print(f"| {name} | " + " | ".join(values.get(k, "-") for k in kinds) + " |")


if __name__ == "__main__":
    main()
