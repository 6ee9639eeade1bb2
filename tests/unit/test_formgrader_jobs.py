"""Long actions in real worker processes: a batch reuses its workers, a crash costs one job."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubservices.formgrader import jobs
from hubservices.formgrader.courses import Course


@pytest.fixture
def course(tmp_path: Path) -> Course:
    return Course("c1", tmp_path / "c1", f"sqlite:///{tmp_path / 'c1.db'}", tmp_path / "exchange")


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[jobs.Worker]:
    """Every worker process started, in order."""
    started: list[jobs.Worker] = []
    start = jobs.Worker.start

    async def counted(course: Course) -> jobs.Worker:
        worker = await start(course)
        started.append(worker)
        return worker

    monkeypatch.setattr(jobs.Worker, "start", counted)
    return started


async def test_a_batch_reuses_its_worker_and_survives_a_crash(
    course: Course, starts: list[jobs.Worker]
) -> None:
    runner = jobs.Jobs(max_parallel=1, timeout=120)
    # nbgrader answers "no such assignment"; two ids make the worker raise (and exit)
    batch = [["nope1"], ["nope2"], ["a", "b"], ["nope3"]]
    results = await runner.run_batch(course, "generate_assignment", batch, "teacher")

    assert [r["success"] for r in results] == [False] * 4
    assert all("nope" in results[i]["log"] for i in (0, 1, 3))
    assert "worker exited 1" in results[2]["error"]
    assert "ValueError: generate_assignment takes 1 ids, not 2" in results[2]["error"]
    assert len(starts) == 2  # one for the first two jobs, a fresh one after the crash
    assert all(w.proc.returncode is not None for w in starts)
    states = [job["state"] for job in reversed(runner.recent("c1"))]
    assert states == ["failed"] * 4


async def test_parallel_workers_share_the_queue(course: Course, starts: list[jobs.Worker]) -> None:
    runner = jobs.Jobs(max_parallel=2, timeout=120)
    batch = [[f"nope{i}"] for i in range(5)]
    results = await runner.run_batch(course, "generate_assignment", batch, "teacher")

    assert [f"nope{i}" in r["log"] for i, r in enumerate(results)] == [True] * 5
    assert len(starts) == 2


async def test_a_job_past_its_timeout_is_killed(course: Course) -> None:
    runner = jobs.Jobs(max_parallel=1, timeout=0.5)  # less than the worker's imports take
    result = await runner.run(course, "generate_assignment", ["nope"], "teacher")
    assert result == {"success": False, "error": "generate_assignment took longer than 0s"}
