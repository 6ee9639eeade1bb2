"""Stats service benchmark (issue 4): one run, figures printed as a Markdown table.

- ``poll``: a real hub with 10,000 users (in 10 groups) and 2,000 running LightSpawner servers.
  Wall time and hub requests of one poll (first poll: opens every session; steady poll:
  nothing changed), by our Poller in this process on a temporary SQLite file, and the poll time
  the stats service itself reports under that hub (least-privilege token). Scrape latency p50 /
  p99 of ``/services/stats/metrics`` next to the hub's own ``/hub/metrics``, both through the
  proxy, sequentially, in the same run.
- ``storage``: bytes per active user-day, from a simulated day of one-minute polls (no hub).
- ``report``: a simulated year on SQLite (``--report-users`` x ``--report-days`` of roll-ups in
  ``--report-groups`` groups, raw sessions of the ``--report-active`` share of users, the last
  day rolled up by the store): the usage report (all users, one group), the dashboard of every
  range (p50/p95 of ``--dashboard-runs`` requests; the first of each sums the rolled-up days,
  the next reuse them), and the CSV and JSON exports as ``api/usage`` streams them (time, size,
  pieces, peak RSS growth of this process).

Run from the project root: ``.venv/bin/python -m bench.stats_bench [--only poll|storage|report]``.
Targets: poll of 10k users under 5 s; scrape p99 no worse than the hub's; report under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.common import percentile, run_on_hub
from hubservices.common.db import Database
from hubservices.common.hubapi import HubAPI
from hubservices.stats import handlers, logic
from hubservices.stats import poller as poller_module
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
figures: list[tuple[str, str]] = []


def figure(name: str, value: str) -> None:
    figures.append((name, value))
    print(f"{name}: {value}", flush=True)


def open_db(path: Path) -> Database:
    db = Database(
        f"sqlite:///{path}",
        migrations="hubservices.stats.migrations",
        version_table="alembic_version_stats",
    )
    db.upgrade()
    return db


class CountingTransport(httpx.AsyncHTTPTransport):
    """Counts the requests our hub client sends."""

    requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        CountingTransport.requests += 1
        return await super().handle_async_request(request)


def scrape_samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def populate(api: HubAPI, users: int, servers: int, groups: int) -> None:
    names = [f"u{i:05d}" for i in range(users)]
    t = time.monotonic()
    for i in range(0, users, 1000):
        await api.create_users(names[i : i + 1000])
    size = users // groups
    for g in range(groups):
        await api.create_group(f"course{g}")
        await api.add_group_users(f"course{g}", names[g * size : (g + 1) * size])
    figure("setup: users and groups created in", f"{time.monotonic() - t:.1f} s")
    t = time.monotonic()
    await asyncio.gather(*(api.start_server(name) for name in names[:servers]))
    figure("setup: servers started in", f"{time.monotonic() - t:.1f} s")


def bench_poll(args: argparse.Namespace, workdir: Path) -> None:
    """The poll and scrape figures on a real hub, stopped (and checked) whatever happens."""
    hub = Hub(
        workdir / "hub",
        services=["stats"],
        service_args={"stats": ["--poll-interval=20"]},
        extra_config=HUB_CONFIG,
    )
    run_on_hub(hub, workdir / "hub", lambda: poll_on_hub(args, hub, workdir), keep=args.keep)


async def poll_on_hub(args: argparse.Namespace, hub: Hub, workdir: Path) -> None:
    async with HubAPI(hub.api_url, hub.admin_token, concurrency=50) as api:
        await populate(api, args.users, args.servers, groups=10)
        stats_token = await api.create_token("admin", scopes=["access:services!service=stats"])
    auth = {"Authorization": f"Bearer {stats_token}"}
    transport = CountingTransport()
    async with (
        HubAPI(hub.api_url, hub.admin_token, transport=transport, page_size=200) as client,
        httpx.AsyncClient(timeout=30) as http,
    ):
        db = open_db(workdir / "poll.sqlite")
        store = StatsStore(db, bucket_seconds=900, retention=None)
        metrics = PollMetrics(CollectorRegistry())
        poller = Poller(client, store, metrics, interval=60, groups={"course0"})
        for label in ("first poll (opens 2,000 sessions, 10,000 memberships)", "steady poll"):
            await after_service_poll(http, hub, auth)
            before, t = CountingTransport.requests, time.monotonic()
            await poller.poll()
            elapsed = time.monotonic() - t
            assert metrics.poll_errors._value.get() == 0, "poll failed"
            figure(
                f"poll of {args.users:,} users, {args.servers:,} servers: {label}",
                f"{elapsed:.2f} s, {CountingTransport.requests - before} hub requests",
            )
        assert poller.last is not None
        assert poller.last.summary.users == args.users + 1
        db.dispose()

    with httpx.Client(timeout=30) as http:
        await service_poll_time(http, hub, auth, args.users + 1)
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
                f"scrape {name} ({args.scrapes} sequential, {size:,} bytes)",
                f"p50 {percentile(times, 50) * 1000:.1f} ms, "
                f"p99 {percentile(times, 99) * 1000:.1f} ms",
            )


async def after_service_poll(http: httpx.AsyncClient, hub: Hub, auth: dict) -> None:
    """Wait until the stats service (polling every 20 s) has just finished a poll, so that the
    hub serves the benchmark's poll alone: a poll overlapping the service's takes up to twice
    as long, which is the hub's single event loop serving two, not the poller."""
    url = hub.service_url("stats", "metrics")
    count = ("hubservices_stats_poll_duration_seconds_count", ())

    async def polls() -> float:
        r = await http.get(url, headers=auth)
        r.raise_for_status()
        return scrape_samples(r.text).get(count, 0)

    seen = await polls()
    deadline = time.monotonic() + 60
    while await polls() == seen:
        if time.monotonic() > deadline:
            raise RuntimeError("the stats service did not finish a poll within 60 s")
        await asyncio.sleep(0.2)


async def service_poll_time(http: httpx.Client, hub: Hub, auth: dict, users: int) -> None:
    """The poll time the stats service reports, once its polls see every user."""
    url = hub.service_url("stats", "metrics")
    duration = ("hubservices_stats_poll_duration_seconds_sum", ())
    count = ("hubservices_stats_poll_duration_seconds_count", ())
    deadline = time.monotonic() + 120
    first = None
    while time.monotonic() < deadline:
        m = scrape_samples(http.get(url, headers=auth).text)
        if m.get(("hubservices_stats_users", ())) == users:
            if first is None:
                first = m
            elif m[count] > first[count]:
                polls = m[count] - first[count]
                seconds = (m[duration] - first[duration]) / polls
                figure("poll by the stats service itself (its histogram)", f"{seconds:.2f} s")
                return
        await asyncio.sleep(1)
    figure("poll by the stats service itself", "not measured (no poll within 120 s)")


class DayHub:
    """Hands the poller a simulated hub: ``active`` users working 09:00-17:00, with servers."""

    hub_version = "bench"

    def __init__(self, users: int, active: int) -> None:
        self.users, self.active = users, active
        self.now = datetime(2026, 3, 2)

    async def paginate(self, *segments: str, params: Any = None) -> AsyncIterator[dict]:
        working = 9 <= self.now.hour < 17
        start = logic.iso(self.now.replace(hour=9, minute=0))
        for i in range(self.users):
            busy = working and i < self.active
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


async def bench_storage(args: argparse.Namespace, workdir: Path) -> None:
    path = workdir / "storage.sqlite"
    db = open_db(path)
    store = StatsStore(db, bucket_seconds=900, retention=None)
    hub = DayHub(users=1000, active=200)
    metrics = PollMetrics(CollectorRegistry())
    poller = Poller(hub, store, metrics, interval=60, groups=set())
    with mock.patch.object(poller_module, "utcnow", lambda: hub.now):
        await simulate_day(poller, hub, path)


async def simulate_day(poller: Poller, hub: DayHub, path: Path) -> None:
    """A first poll, then a day of one-minute polls, then the next day's roll-up; the growth."""
    store = poller.store
    db = store.db
    await poller.poll()  # the first poll stores every user's membership and old activity
    db.dispose()
    before = path.stat().st_size
    db = open_db(path)
    store.db = db
    t = time.monotonic()
    for _ in range(24 * 60):
        hub.now += timedelta(minutes=1)
        await poller.poll()
    elapsed = time.monotonic() - t
    hub.now += timedelta(days=1)  # next day: roll-up of the simulated day
    await poller.poll()
    db.dispose()
    grown = path.stat().st_size - before
    figure(
        "storage: a simulated day (1,000 users, 200 active 8 h, 1,440 polls)",
        f"{grown / hub.active:,.0f} bytes per active user-day "
        f"(file grew {grown:,} bytes; polls took {elapsed / 1440 * 1000:.1f} ms each)",
    )


def bench_report(args: argparse.Namespace, workdir: Path) -> None:
    """A year of roll-ups for every user, raw sessions for the active share of them (all year)
    and their activity for the last week; then reports, the dashboard and the CSV export."""
    db = open_db(workdir / "report.sqlite")
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
            f" ({args.dashboard_runs} runs; the first {times[0] * 1000:.0f} ms)",
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stats-bench-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "report"):
            bench_report(args, workdir)
        if args.only in (None, "storage"):
            asyncio.run(bench_storage(args, workdir))
        if args.only in (None, "poll"):
            bench_poll(args, workdir)
    print("\n| measurement | result |\n|---|---|")
    for name, value in figures:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
