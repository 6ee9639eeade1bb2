"""Long actions as durable jobs, in real worker processes and a real database (SQLite and
PostgreSQL): a batch reuses its workers, a crash costs one job, a restart resumes, the same
submission is never graded twice at once, a batch can be cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from nbgrader.coursedir import CourseDirectory

from hubservices.common.db import Database
from hubservices.formgrader import jobs
from hubservices.formgrader.courses import Course
from hubservices.formgrader.handlers import unsafe_submissions
from hubservices.formgrader.models import Base, Job


@pytest.fixture
def course(tmp_path: Path) -> Course:
    return Course("c1", tmp_path / "c1", f"sqlite:///{tmp_path / 'c1.db'}", tmp_path / "exchange")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The service's database, migrated: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hubservices.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(
        url,
        migrations="hubservices.formgrader.migrations",
        version_table="alembic_version_formgrader",
    )
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
async def make_runner(db: Database, course: Course) -> AsyncIterator[Callable[..., jobs.Jobs]]:
    """``make_runner(max_parallel=1, timeout=120)``: a Jobs on the database; stopped at the end."""
    made: list[jobs.Jobs] = []

    def make(max_parallel: int = 1, timeout: float = 120) -> jobs.Jobs:
        runner = jobs.Jobs(
            jobs.JobStore(db), {course.id: course}, max_parallel=max_parallel, timeout=timeout
        )
        made.append(runner)
        return runner

    yield make
    for runner in made:
        await runner.stop()


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


def rows(db: Database) -> list[Job]:
    with db.session() as session:
        return list(session.query(Job).order_by(Job.id))


async def until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def wait_all(runner: jobs.Jobs, course: Course, ids: list[int]) -> list[dict]:
    return list(await asyncio.gather(*(runner.wait(course, i) for i in ids)))


def test_the_migration_creates_what_the_models_declare(db: Database) -> None:
    db.upgrade()  # again: nothing to do
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": "alembic_version_formgrader"}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_submission_dirs_with_invalid_names_are_found(tmp_path: Path) -> None:
    submitted = tmp_path / "submitted"
    for path in ["s1/ps1", "<img src=x onerror=alert(1)>/ps1", "=cmd|x/ps1", "s2/.hidden"]:
        (submitted / path).mkdir(parents=True)
    (submitted / "notes.txt").write_text("not a student")
    found = unsafe_submissions(CourseDirectory(root=str(tmp_path)))
    assert found == [("<img src=x onerror=alert(1)>", "ps1"), ("=cmd|x", "ps1"), ("s2", ".hidden")]
    assert unsafe_submissions(CourseDirectory(root=str(tmp_path / "nothing"))) == []


async def test_a_batch_reuses_its_worker_and_survives_a_crash(
    course: Course, starts: list[jobs.Worker], make_runner, db: Database
) -> None:
    runner = make_runner(max_parallel=1)
    # nbgrader answers "no such assignment"; two ids make the worker raise (and exit)
    batch = [["nope1"], ["nope2"], ["a", "b"], ["nope3"]]
    submitted = await runner.submit(course, "generate_assignment", batch, "teacher")
    results = await wait_all(runner, course, submitted.jobs)

    assert [r["success"] for r in results] == [False] * 4
    assert all("nope" in results[i]["log"] for i in (0, 1, 3))
    assert "worker exited 1" in results[2]["error"]
    assert "ValueError: generate_assignment takes 1 ids, not 2" in results[2]["error"]
    assert len(starts) == 2  # one for the first two jobs, a fresh one after the crash
    # with the queue empty, the lane's worker exits
    assert await until(lambda: all(w.proc.returncode is not None for w in starts))

    # the history is in the database: who, what, when, state, log, error
    stored = rows(db)
    assert [(j.state, j.user, j.attempts) for j in stored] == [("failed", "teacher", 1)] * 4
    assert all(j.started_at and j.finished_at and j.queued_at for j in stored)
    assert "nope1" in (stored[0].log or "") and "ValueError" in (stored[2].error or "")
    summary = await runner.batch(course, submitted.batch)
    assert summary["total"] == 4 and summary["failed"] == 4 and summary["finished"]
    assert summary["failures"][2]["reason"] == (
        "ValueError: generate_assignment takes 1 ids, not 2"
    )


async def test_parallel_workers_share_the_queue(
    course: Course, starts: list[jobs.Worker], make_runner
) -> None:
    runner = make_runner(max_parallel=2)
    batch = [[f"nope{i}"] for i in range(5)]
    submitted = await runner.submit(course, "generate_assignment", batch, "teacher")
    results = await wait_all(runner, course, submitted.jobs)

    assert [f"nope{i}" in r["log"] for i, r in enumerate(results)] == [True] * 5
    assert len(starts) == 2


async def test_a_job_past_its_timeout_is_killed(course: Course, make_runner) -> None:
    runner = make_runner(timeout=0.5)  # less than the worker's imports take
    result = await runner.run(course, "generate_assignment", ["nope"], "teacher")
    assert result == {"success": False, "error": "generate_assignment took longer than 0s"}


async def test_the_same_submission_joins_the_active_job(
    course: Course, starts: list[jobs.Worker], make_runner, db: Database
) -> None:
    runner = make_runner(max_parallel=1)
    first = await runner.submit(course, "autograde", [["ps1", "s1"], ["ps1", "s2"]], "t1")
    again = await runner.submit(course, "autograde", [["ps1", "s2"], ["ps1", "s3"]], "t2")
    assert again.jobs[0] == first.jobs[1]  # joined, not queued twice
    assert again.jobs[1] not in first.jobs
    results = await wait_all(runner, course, [*first.jobs, again.jobs[1]])
    assert len(results) == 3 and len(rows(db)) == 3
    summary = await runner.batch(course, again.batch)
    assert summary["total"] == 2 and summary["finished"]

    # once finished, asking again grades again
    later = await runner.submit(course, "autograde", [["ps1", "s2"]], "t1")
    assert later.jobs[0] not in first.jobs + again.jobs
    await runner.wait(course, later.jobs[0])


def test_a_job_that_ran_without_the_sandbox_is_flagged(course: Course, db: Database) -> None:
    store = jobs.JobStore(db)
    submitted = store.submit(course.id, "autograde", [["ps1", "s1"], ["ps1", "s2"]], "teacher")
    for isolation in ("none", "bubblewrap"):
        job = store.claim(course.id)
        assert job is not None
        store.finish(job.id, "done", {"log": "graded", "sandbox": isolation})
    summary = store.batch(course.id, submitted.batch)
    assert summary is not None and summary["unsandboxed"] == 1
    flagged = [jobs.job_to_dict(job)["isolation"] for job in rows(db)]
    assert sorted(flagged) == ["bubblewrap", "none"]


async def test_a_restart_resumes_the_unfinished_jobs_once(
    course: Course, starts: list[jobs.Worker], make_runner, db: Database
) -> None:
    # the last run of the service: one job done, one running when it died, two queued
    store = jobs.JobStore(db)
    batch = [["nope0"], ["nope1"], ["nope2"], ["nope3"]]
    submitted = store.submit(course.id, "generate_assignment", batch, "teacher")
    done = store.claim(course.id)
    assert done is not None
    store.finish(done.id, "done", {"log": "graded"})
    interrupted = store.claim(course.id)
    assert interrupted is not None

    runner = make_runner(max_parallel=2)
    await runner.resume()
    results = await wait_all(runner, course, submitted.jobs[1:])
    assert all("nope" in r["log"] for r in results)

    by_id = {job.id: job for job in rows(db)}
    assert by_id[done.id].log == "graded" and by_id[done.id].attempts == 1  # not repeated
    assert by_id[interrupted.id].attempts == 2  # run again, and finished once
    assert [by_id[i].state for i in submitted.jobs[1:]] == ["failed"] * 3
    assert [by_id[i].attempts for i in submitted.jobs[2:]] == [1, 1]


async def test_cancel_kills_the_running_job_and_drops_the_queued(
    course: Course, starts: list[jobs.Worker], make_runner, db: Database
) -> None:
    runner = make_runner(max_parallel=1)
    submitted = await runner.submit(
        course, "generate_assignment", [["nope0"], ["nope1"], ["nope2"]], "teacher"
    )
    other = await runner.submit(course, "generate_assignment", [["other"]], "teacher")
    while not starts:  # the first job is running (its worker is importing nbgrader)
        await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(runner.wait(course, submitted.jobs[2]))

    assert await runner.cancel(course, submitted.batch, "teacher2")
    assert (await waiting) == {"success": False, "log": "", "error": "cancelled by teacher2"}
    assert "other" in (await runner.wait(course, other.jobs[0]))["log"]  # the rest goes on

    summary = await runner.batch(course, submitted.batch)
    assert summary["cancelled"] == 3 and summary["finished"]
    assert summary["cancelled_by"] == "teacher2"
    assert {f["reason"] for f in summary["failures"]} == {"cancelled by teacher2"}
    assert await until(lambda: starts[0].proc.returncode is not None)  # the running one died
    assert [j.attempts for j in rows(db)] == [1, 0, 0, 1]
    assert not await runner.cancel(course, 999, "teacher2")
