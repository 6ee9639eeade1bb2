"""Periodic async jobs (culling, stats sampling) on the service's asyncio event loop."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import undefined


class Scheduler:
    """A thin AsyncIOScheduler wrapper whose jobs never overlap and never pile up.

    APScheduler logs a job's exception with its traceback (logger ``apscheduler.executors``)
    and keeps the schedule, so one failed run does not stop later ones.
    """

    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def add_periodic(
        self,
        func: Callable[[], Coroutine[Any, Any, object]],
        seconds: float,
        *,
        name: str,
        run_now: bool = True,
    ) -> ScheduledJob:
        """Run the coroutine function ``func`` every ``seconds``, first at start if ``run_now``.

        A run still going when the next is due makes that next one skip (max_instances=1).
        Runs missed while the loop was blocked or the host suspended happen once, however
        late (coalesce, no misfire grace limit), rather than being dropped or replayed.
        """
        self._scheduler.add_job(
            func,
            IntervalTrigger(seconds=seconds),
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC) if run_now else undefined,
        )
        return ScheduledJob(self, name, seconds)

    def next_run(self, name: str) -> datetime | None:
        """When job ``name`` runs next (UTC), e.g. for a status page; None if not scheduled."""
        job = self._scheduler.get_job(name)
        # Until start(), a job without run_now has no next run time yet.
        return getattr(job, "next_run_time", None)

    def run_soon(self, name: str) -> None:
        """Bring job ``name``'s next run forward to now (it skips if a run is still going)."""
        self._scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    def start(self) -> None:
        """Start running jobs; call from within the running event loop."""
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop scheduling without waiting for running jobs, e.g. on SIGTERM; idempotent."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)


@dataclass(frozen=True)
class ScheduledJob:
    """One periodic job, as a status page sees it: its period, next run, "run now" button."""

    scheduler: Scheduler
    name: str
    seconds: float

    def next_run(self) -> datetime | None:
        return self.scheduler.next_run(self.name)

    def run_soon(self) -> None:
        self.scheduler.run_soon(self.name)
