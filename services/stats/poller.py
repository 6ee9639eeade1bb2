"""The periodic job: read the hub's users, let :mod:`.logic` decide, let the store write.

Most polls ask the hub only for the users with a running or pending server
(``GET /users?state=active``): every session starts and ends among them. Every
``sync_interval`` a full sync lists every user, for new, deleted and server-less users and
group changes. On a large hub that is a few pages per poll instead of one per 200 users.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from ..common.hubapi import HubAPIError
from ..common.timeutil import utcnow
from . import logic
from .metrics import LastPoll, PollMetrics
from .store import StatsStore, StoredState

log = logging.getLogger(__name__)

#: Slack on top of two poll intervals before a vanished server counts as gone unobserved.
GAP_SLACK = timedelta(seconds=10)

T = TypeVar("T")


class UserLister(Protocol):
    """What a poll asks of the hub (a :class:`HubAPI`, or a simulated hub in benchmarks)."""

    @property
    def hub_version(self) -> str | None: ...

    def paginate(
        self, *segments: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]: ...


class Poller:
    """Keeps the state the next poll compares with, and the last poll for the metrics."""

    def __init__(
        self,
        hub: UserLister,
        store: StatsStore,
        metrics: PollMetrics,
        *,
        interval: float,
        sync_interval: float,
        groups: set[str],
    ) -> None:
        self.hub = hub
        self.store = store
        self.metrics = metrics
        self.max_gap = 2 * timedelta(seconds=interval) + GAP_SLACK
        self.sync_interval = timedelta(seconds=sync_interval)
        self.groups = groups
        #: the hub as the last poll saw it; steady polls update it, full syncs replace it
        self.known: logic.HubSnapshot | None = None
        self.synced: datetime | None = None
        self.state: StoredState | None = None
        self.last: LastPoll | None = None
        self.rolled_day: datetime | None = None
        self.previous_poll: datetime | None = None
        self._writing: concurrent.futures.Future[Any] | None = None
        #: the thread computing the dashboard's kept sums, if any, and the day and the store's
        #: count of writes to the past it computed them for
        self.warming: threading.Thread | None = None
        self._warmed: tuple[datetime, int] | None = None

    async def poll(self) -> None:
        """One poll; a failure is counted and logged, and the next poll starts over."""
        started = time.monotonic()
        kind = "full" if self._sync_due(utcnow()) else "active"
        try:
            await self._poll(full=kind == "full")
        except Exception as e:  # the hub or the database failed: keep the schedule going
            self.metrics.poll_errors.inc()
            # a hub error says what went wrong in one line; anything else needs its traceback
            log.error("Poll failed: %s", e, exc_info=not isinstance(e, HubAPIError))
            self.state = None  # reload from the database: a failed write rolled back
        finally:
            self.metrics.poll_duration.labels(kind).observe(time.monotonic() - started)

    def _sync_due(self, now: datetime) -> bool:
        return self.known is None or self.synced is None or now - self.synced >= self.sync_interval

    async def _store(self, call: Callable[..., T], *args: Any) -> T:
        """Run a store method (one transaction) in a daemon thread of its own.

        A poll's writes are one transaction (``StatsStore.apply``; the roll-up is another,
        which resumes where it stopped): on SIGTERM :meth:`finish` lets it commit within the
        service's grace period; past that the process exits without waiting for the thread
        (a default-executor thread would keep it alive, e.g. behind a database lock), and the
        database rolls the whole transaction back. Either way no poll is half-written.
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(call(*args))
            except BaseException as e:  # handed to the awaiting poll, which logs it
                future.set_exception(e)

        self._writing = future
        threading.Thread(target=run, name="stats-store", daemon=True).start()
        return await asyncio.wrap_future(future)

    async def finish(self) -> None:
        """Wait for the store call in flight, if any, to commit or roll back."""
        if self._writing is not None:
            with contextlib.suppress(Exception):  # the poll that made the call logs failures
                await asyncio.shield(asyncio.wrap_future(self._writing))

    async def _poll(self, *, full: bool) -> None:
        if self.state is None:
            self.state = await self._store(self.store.load_state)
        params = None if full else {"state": "active"}
        builder = logic.SnapshotBuilder()
        async for user in self.hub.paginate("users", params=params):  # a page at a time
            builder.add(user)
        snapshot = builder.build(utcnow(), self.hub.hub_version)
        if not full:
            assert self.known is not None  # _sync_due is true until a full sync succeeded
            snapshot = logic.merge_active(self.known, snapshot)
        state = self.state
        changes = logic.reconcile_sessions(state.open_sessions.values(), snapshot, self.max_gap)
        buckets = logic.new_activity_buckets(
            state.recorded_buckets, snapshot, self.store.bucket_seconds
        )
        joined, left = logic.membership_changes(state.open_memberships, snapshot.memberships)
        opened = await self._store(self.store.apply, snapshot, changes, buckets, joined, left)

        for closed in changes.closed:
            state.open_sessions.pop((closed.session.user, closed.session.server), None)
            self.metrics.stops.labels(closed.reason).inc()
            self.metrics.session_duration.observe(closed.duration)
        for session, last_activity in changes.moved:
            session.last_activity = last_activity
        for session in state.open_sessions.values():
            session.last_seen = snapshot.taken
        state.open_sessions.update(((s.user, s.server), s) for s in opened)
        state.recorded_buckets.update(buckets)
        state.open_memberships = (state.open_memberships | joined) - left
        self.metrics.starts.inc(len(opened))
        if self.previous_poll is not None:  # server time before our first poll is not ours
            self.metrics.server_seconds.inc(
                logic.server_seconds(snapshot.servers, self.previous_poll, snapshot.taken)
            )
        self.previous_poll = snapshot.taken
        self.known = snapshot
        if full:
            self.synced = snapshot.taken
        self.last = LastPoll(
            logic.summarize(snapshot, self.groups), snapshot.hub_version, time.time()
        )

        today = logic.day_start(snapshot.taken)
        if self.rolled_day != today:
            days = await self._store(self.store.roll_up, snapshot.taken)
            self.rolled_day = today
            if days:
                log.info("Rolled up %d day(s) of usage", days)
        warmed = (today, self.store.past_writes)
        if self._warmed != warmed and not (self.warming and self.warming.is_alive()):
            self._warmed = warmed
            self._warm_dashboard(snapshot.taken)

    def _warm_dashboard(self, now: datetime) -> None:
        """Sum the dashboard's rolled-up days in the background after a roll-up, a restart, or
        a write to an earlier day (which drops the kept sums), so no admin waits for it. A
        daemon thread: it only reads, and SIGTERM need not wait for it."""

        def run() -> None:
            started = time.monotonic()
            try:
                self.store.warm_dashboard(now)
            except Exception:  # the next request computes what it needs itself
                log.exception("Summing the dashboard's rolled-up days failed")
                return
            log.info(
                "Dashboard sums of the rolled-up days ready in %.1f s", time.monotonic() - started
            )

        self.warming = threading.Thread(target=run, name="stats-dashboard", daemon=True)
        self.warming.start()
