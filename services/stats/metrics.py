"""The stats service's Prometheus metrics (prefix ``hubservices_stats_``).

Gauges come from a collector that reads the last poll's :class:`~.logic.Summary`, so a scrape
never calls the hub; counters and histograms are updated by the poller as things happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .logic import DURATION_BUCKETS, Summary

PREFIX = "hubservices_stats"


@dataclass(frozen=True)
class LastPoll:
    """What the collector reports: the last successful poll."""

    summary: Summary
    hub_version: str | None
    finished: float  # unix time


class SnapshotCollector(Collector):
    """Gauges of the last successful poll; nothing at all before the first one."""

    def __init__(self, last_poll: Callable[[], LastPoll | None]) -> None:
        self._last_poll = last_poll

    def describe(self) -> Iterator[Metric]:
        # registration asks for names; collect() would yield nothing before the first poll
        return self._families()

    def collect(self) -> Iterator[Metric]:
        last = self._last_poll()
        if last is not None:
            yield from self._families(last)

    def _families(self, last: LastPoll | None = None) -> Iterator[Metric]:
        s = last.summary if last else None
        servers = GaugeMetricFamily(
            f"{PREFIX}_servers",
            "Servers by state (running, spawn_pending, stop_pending) and kind (default, named)",
            labels=["state", "kind"],
        )
        users = GaugeMetricFamily(f"{PREFIX}_users", "Users the hub has")
        active = GaugeMetricFamily(
            f"{PREFIX}_active_users",
            "Users whose last activity is within the window",
            labels=["window"],
        )
        unique = GaugeMetricFamily(
            f"{PREFIX}_unique_users",
            "Users active since the start of the current UTC day, ISO week or month",
            labels=["period"],
        )
        group_active = GaugeMetricFamily(
            f"{PREFIX}_group_active_users",
            "Members of an allow-listed group active within the window",
            labels=["group", "window"],
        )
        group_running = GaugeMetricFamily(
            f"{PREFIX}_group_running_servers",
            "Running servers of the members of an allow-listed group",
            labels=["group"],
        )
        last_success = GaugeMetricFamily(
            f"{PREFIX}_last_successful_poll_timestamp_seconds",
            "Unix time the last successful poll of the hub finished",
        )
        hub = InfoMetricFamily(f"{PREFIX}_hub", "The polled hub's version")
        if last is not None and s is not None:
            for (state, kind), n in sorted(s.servers.items()):
                servers.add_metric([state, kind], n)
            users.add_metric([], s.users)
            for window, n in s.active_users.items():
                active.add_metric([window], n)
            for period, n in s.unique_users.items():
                unique.add_metric([period], n)
            for (group, window), n in sorted(s.group_active_users.items()):
                group_active.add_metric([group, window], n)
            for group, n in sorted(s.group_running_servers.items()):
                group_running.add_metric([group], n)
            last_success.add_metric([], last.finished)
            hub.add_metric([], {"version": last.hub_version or "unknown"})
        yield from (servers, users, active, unique, group_active, group_running, last_success, hub)


class PollMetrics:
    """Counters and histograms the poller updates."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.starts = Counter(
            f"{PREFIX}_server_starts", "Server runs that started", registry=registry
        )
        self.stops = Counter(
            f"{PREFIX}_server_stops",
            "Server runs that ended, by how the end was observed",
            ["reason"],
            registry=registry,
        )
        self.server_seconds = Counter(
            f"{PREFIX}_server_seconds",
            "Time servers ran (divide by 3600 for server-hours)",
            registry=registry,
        )
        self.session_duration = Histogram(
            f"{PREFIX}_session_duration_seconds",
            "Length of server runs that ended",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds",
            "Time a poll of the hub took, storing included, by kind: active (users with a "
            "server) or full (every user)",
            ["kind"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.poll_errors = Counter(f"{PREFIX}_poll_errors", "Polls that failed", registry=registry)
