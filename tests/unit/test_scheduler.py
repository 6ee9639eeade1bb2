"""Scheduler: periodic async jobs that never overlap, survive errors and coalesce missed runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from hubservices.common.scheduler import Scheduler


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    """Async so that shutdown runs while the test's event loop is still open."""
    scheduler = Scheduler()
    yield scheduler
    scheduler.shutdown()


async def test_slow_job_never_overlaps(scheduler: Scheduler) -> None:
    running = max_running = runs = 0

    async def slow() -> None:
        nonlocal running, max_running, runs
        running += 1
        max_running = max(max_running, running)
        await asyncio.sleep(0.25)
        running -= 1
        runs += 1

    scheduler.add_periodic(slow, 0.05, name="slow")
    scheduler.start()
    await asyncio.sleep(0.7)

    assert runs >= 2
    assert max_running == 1


async def test_run_now_runs_at_start(scheduler: Scheduler) -> None:
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    scheduler.add_periodic(job, 60, name="job", run_now=True)
    scheduler.start()

    await asyncio.wait_for(ran.wait(), timeout=1)


async def test_failed_run_is_logged_and_next_run_happens(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0
    second_run = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("hub unreachable")
        second_run.set()

    scheduler.add_periodic(flaky, 0.1, name="flaky")
    with caplog.at_level(logging.ERROR, logger="apscheduler"):
        scheduler.start()
        await asyncio.wait_for(second_run.wait(), timeout=2)

    [record] = [r for r in caplog.records if r.exc_info]
    assert "flaky" in record.getMessage()
    assert "hub unreachable" in caplog.text  # with its traceback


async def test_runs_missed_while_loop_blocked_coalesce_into_one(scheduler: Scheduler) -> None:
    runs = 0
    ran = asyncio.Event()

    async def job() -> None:
        nonlocal runs
        runs += 1
        ran.set()

    scheduler.add_periodic(job, 0.2, name="job", run_now=False)
    scheduler.start()
    time.sleep(0.7)  # blocks the event loop across three due times (0.2, 0.4, 0.6 s)

    await asyncio.wait_for(ran.wait(), timeout=1)
    await asyncio.sleep(0.03)  # room for replays; the next due time is 0.8 s

    assert runs == 1


async def test_overdue_run_still_happens(scheduler: Scheduler) -> None:
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    scheduler.add_periodic(job, 60, name="job", run_now=True)
    time.sleep(1.2)  # a slow service start: past APScheduler's default 1 s misfire grace time
    scheduler.start()

    await asyncio.wait_for(ran.wait(), timeout=1)


async def test_next_run_is_in_the_future(scheduler: Scheduler) -> None:
    async def job() -> None:
        pass

    scheduler.add_periodic(job, 60, name="cull", run_now=False)
    scheduler.start()

    next_run = scheduler.next_run("cull")
    assert next_run is not None
    assert next_run > datetime.now(UTC)
    assert scheduler.next_run("unknown") is None
