"""Long nbgrader actions in worker processes: durable, bounded, timed out, cancellable.

Every job is a row of the service's database (:mod:`.models`) from the moment it is asked for:
a request answers with job ids at once, a restart queues again what was running, and a second
request for the same submission joins the active job instead of grading it twice.

The event loop only waits on the processes, so every other request keeps being answered while
an autograde runs; at most ``max_parallel`` jobs run at once, the rest queue. The jobs of a
course are run by lanes that reuse their worker for job after job: starting Python and
importing nbgrader costs seconds, more than autograding a small notebook does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select

from ..common.db import Database
from ..common.timeutil import as_utc, utcnow
from .courses import Course, worker_env
from .models import ACTIVE, CANCELLED, DONE, FAILED, QUEUED, RUNNING, Batch, BatchJob, Job
from .sandbox import UNSANDBOXED
from .worker import course_to_json

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Jobs and batches of a course the course page and ``api/jobs`` show.
RECENT_JOBS = 200
RECENT_BATCHES = 10
#: Characters of nbgrader's log and of an error kept in the database (their ends).
KEEP_CHARS = 100_000
#: Characters of a worker's stderr kept for the error of a job it died in.
STDERR_TAIL = 4000
#: Bytes a result line may have (nbgrader's captured log is in it).
RESULT_LIMIT = 64 * 2**20
#: setpriv (util-linux) gives a worker PR_SET_PDEATHSIG: when the service dies (a crash, a
#: SIGKILL), its workers die with it instead of grading on beside the restarted service.
SETPRIV = shutil.which("setpriv")


def _iso(moment: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with its zone."""
    return None if moment is None else as_utc(moment).isoformat()


def _tail(text: str | None) -> str | None:
    return text if text is None or len(text) <= KEEP_CHARS else text[-KEEP_CHARS:]


def reason(error: str | None) -> str:
    """The line of an error a person reads first: a traceback's last one."""
    lines = [line for line in (error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def job_to_dict(job: Job, *, with_log: bool = False) -> dict[str, Any]:
    data = {
        "id": job.id,
        "course": job.course,
        "action": job.action,
        "args": job.args,
        "assignment": job.assignment,
        "student": job.student or None,
        "user": job.user,
        "state": job.state,
        "queued_at": _iso(job.queued_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "attempts": job.attempts,
        "error": job.error,
        "isolation": job.isolation,
        "ran_on": job.ran_on.split() if job.ran_on else [],
    }
    if with_log:
        data["log"] = job.log
    return data


def batch_summary(batch: Batch, jobs: Iterable[Job]) -> dict[str, Any]:
    """Progress of a batch: counts by state, and each failure with its reason."""
    jobs = list(jobs)
    counts = Counter(job.state for job in jobs)
    return {
        "id": batch.id,
        "action": batch.action,
        "user": batch.user,
        "created_at": _iso(batch.created_at),
        "cancelled_by": batch.cancelled_by,
        "total": len(jobs),
        **{state: counts[state] for state in (QUEUED, RUNNING, DONE, FAILED, CANCELLED)},
        "finished": not any(job.state in ACTIVE for job in jobs),
        # when its last job ended, once none is left to run (how long the batch took)
        "finished_at": None
        if any(job.state in ACTIVE for job in jobs)
        else _iso(max((job.finished_at for job in jobs if job.finished_at), default=None)),
        # student code that ran without the sandbox (allow_unsandboxed_autograde): flagged
        "unsandboxed": sum(job.isolation == UNSANDBOXED for job in jobs),
        "jobs": [job.id for job in jobs],
        "failures": [
            {"job": job.id, "args": job.args, "state": job.state, "reason": reason(job.error)}
            for job in jobs
            if job.state in (FAILED, CANCELLED)
        ],
    }


def result_of(job: Job) -> dict[str, Any]:
    """nbgrader's ``{success, log, error}`` answer, from a finished job's row."""
    return {"success": job.state == DONE, "log": job.log or "", "error": job.error or ""}


def cancelled_result(user: str) -> dict[str, Any]:
    return {"success": False, "log": "", "error": f"cancelled by {user}"}


@dataclass(frozen=True)
class Submitted:
    """What a request for jobs gets back at once."""

    batch: int
    jobs: list[int]


class JobStore:
    """Every read and write of the job tables; blocking, so :class:`Jobs` runs it in a thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def submit(
        self, course: str, action: str, batch: Iterable[Iterable[str]], user: str
    ) -> Submitted:
        """A batch of jobs; ids that have an active job join it instead of queueing another."""
        now = utcnow()
        wanted = list(dict.fromkeys(tuple(args) for args in batch))
        with self.db.session() as session:
            row = Batch(course=course, action=action, user=user, created_at=now)
            session.add(row)
            session.flush()
            ids = []
            for args in wanted:
                assignment, student = args[0], (args[1] if len(args) > 1 else "")
                job = session.scalar(
                    select(Job).where(
                        Job.course == course,
                        Job.action == action,
                        Job.assignment == assignment,
                        Job.student == student,
                        Job.state.in_(ACTIVE),
                    )
                )
                if job is None:
                    job = Job(
                        course=course, action=action, assignment=assignment, student=student,
                        user=user, state=QUEUED, queued_at=now, attempts=0,
                    )  # fmt: skip
                    session.add(job)
                    session.flush()
                session.add(BatchJob(batch_id=row.id, job_id=job.id))
                ids.append(job.id)
            return Submitted(row.id, ids)

    def claim(self, course: str) -> Job | None:
        """The course's oldest queued job, now running."""
        with self.db.session() as session:
            job = session.scalar(
                select(Job)
                .where(Job.course == course, Job.state == QUEUED)
                .order_by(Job.id)
                .limit(1)
            )
            if job is not None:
                job.state, job.started_at = RUNNING, utcnow()
                job.attempts += 1
            return job

    def finish(self, job_id: int, state: str, result: dict[str, Any]) -> None:
        """Record how a job ended: nbgrader's log and error, and how its student code ran."""
        with self.db.session() as session:
            job = session.get_one(Job, job_id)
            job.state, job.finished_at = state, utcnow()
            job.log, job.error = _tail(result.get("log")), _tail(result.get("error"))
            job.isolation = result.get("sandbox")
            job.ran_on = " ".join(result.get("dask_workers", ())) or None

    def requeue_interrupted(self) -> list[int]:
        """After a restart: jobs left running by the last run of the service run again."""
        with self.db.session() as session:
            jobs = session.scalars(select(Job).where(Job.state == RUNNING)).all()
            for job in jobs:
                job.state = QUEUED
            return [job.id for job in jobs]

    def queued_courses(self) -> set[str]:
        with self.db.session() as session:
            return set(session.scalars(select(Job.course).where(Job.state == QUEUED).distinct()))

    def fail_queued(self, course: str, error: str) -> list[int]:
        """Fail the queued jobs of a course the service no longer serves."""
        with self.db.session() as session:
            jobs = session.scalars(
                select(Job).where(Job.course == course, Job.state == QUEUED)
            ).all()
            for job in jobs:
                job.state, job.finished_at, job.error = FAILED, utcnow(), error
            return [job.id for job in jobs]

    def cancel(self, course: str, batch_id: int, user: str) -> tuple[list[int], list[int]] | None:
        """Cancel a batch's queued jobs; its running ones' ids, for the caller to kill.

        None when the course has no such batch. Returns (cancelled, running).
        """
        now = utcnow()
        with self.db.session() as session:
            batch = session.get(Batch, batch_id)
            if batch is None or batch.course != course:
                return None
            batch.cancelled_by = batch.cancelled_by or user
            cancelled, running = [], []
            for job in self._jobs_of(session, batch_id):
                if job.state == QUEUED:
                    job.state, job.finished_at = CANCELLED, now
                    job.error = cancelled_result(user)["error"]
                    cancelled.append(job.id)
                elif job.state == RUNNING:
                    running.append(job.id)
            return cancelled, running

    def job(self, course: str, job_id: int) -> Job | None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            return job if job is not None and job.course == course else None

    def batch(self, course: str, batch_id: int) -> dict[str, Any] | None:
        with self.db.session() as session:
            batch = session.get(Batch, batch_id)
            if batch is None or batch.course != course:
                return None
            return batch_summary(batch, self._jobs_of(session, batch_id))

    def recent(self, course: str) -> dict[str, Any]:
        """The course's latest jobs and batches (with their progress), newest first."""
        with self.db.session() as session:
            jobs = session.scalars(
                select(Job).where(Job.course == course).order_by(Job.id.desc()).limit(RECENT_JOBS)
            ).all()
            batches = session.scalars(
                select(Batch)
                .where(Batch.course == course)
                .order_by(Batch.id.desc())
                .limit(RECENT_BATCHES)
            ).all()
            return {
                "jobs": [job_to_dict(job) for job in jobs],
                "batches": [
                    batch_summary(batch, self._jobs_of(session, batch.id)) for batch in batches
                ],
            }

    @staticmethod
    def _jobs_of(session: Any, batch_id: int) -> list[Job]:
        return list(
            session.scalars(
                select(Job)
                .join(BatchJob, BatchJob.job_id == Job.id)
                .where(BatchJob.batch_id == batch_id)
                .order_by(Job.id)
            )
        )


class Worker:
    """One ``hubservices.formgrader.worker`` process of a course, running jobs one at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._stderr = ""
        self._drain = asyncio.create_task(self._keep_stderr_tail())

    @classmethod
    async def start(cls, course: Course) -> Worker:
        course.root.mkdir(parents=True, exist_ok=True)
        die_with_service = [SETPRIV, "--pdeathsig", "KILL"] if SETPRIV else []
        proc = await asyncio.create_subprocess_exec(
            *die_with_service, sys.executable, "-m", "hubservices.formgrader.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=worker_env(os.environ, os.path.dirname(sys.executable)),
            cwd=course.root,
            start_new_session=True,  # so a timeout kills the kernels it started too
            limit=RESULT_LIMIT,
        )  # fmt: skip
        return cls(proc)

    async def _keep_stderr_tail(self) -> None:
        """Read nbgrader's log as it comes (a full pipe would stall the worker); keep its end."""
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self._stderr = (self._stderr + chunk.decode(errors="replace"))[-STDERR_TAIL:]

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def run(
        self, course: Course, action: str, args: list[str], timeout: float
    ) -> dict[str, Any]:
        """One job: its line to the worker, its result line back; a failure is a result."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        job = {"course": course_to_json(course), "action": action, "args": args}
        try:
            self.proc.stdin.write(json.dumps(job).encode() + b"\n")
            await self.proc.stdin.drain()
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.kill()
            return {"success": False, "error": f"{action} took longer than {timeout:.0f}s"}
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        if not line:  # the worker died in the job (nbgrader raised, or it was killed)
            await self.kill()
            error = f"worker exited {self.proc.returncode}:\n{self._stderr}"
            return {"success": False, "error": error}
        result: dict[str, Any] = json.loads(line)
        return result

    async def kill(self) -> None:
        """Kill the worker and everything it started (kernels)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self._ended()

    async def close(self) -> None:
        """No more jobs: the worker exits at the end of its input."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self._ended()

    async def _ended(self) -> None:
        """Wait for the exit, and briefly for the last of stderr (a stray child may hold it)."""
        await self.proc.wait()
        await asyncio.wait([self._drain], timeout=1)
        self._drain.cancel()


class Jobs:
    """Runs the queued jobs of every course in worker processes, and answers about them."""

    def __init__(
        self,
        store: JobStore,
        courses: Mapping[str, Course],
        *,
        max_parallel: int,
        timeout: float,
    ) -> None:
        self.store = store
        self.courses = courses
        self.max_parallel = max_parallel
        self.timeout = timeout
        #: One thread for the job tables: every write in order, none on the event loop.
        self._db = ThreadPoolExecutor(1, thread_name_prefix="formgrader-jobs")
        self._slots = asyncio.Semaphore(max_parallel)
        self._lanes: Counter[str] = Counter()
        #: Courses with jobs queued since a lane last looked (see ``_lane``).
        self._queued: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: set[Worker] = set()
        self._running: dict[int, Worker] = {}
        self._cancelled: dict[int, str] = {}
        self._waiters: dict[int, list[asyncio.Future[dict[str, Any]]]] = {}
        self._stopped = False

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        """The store's blocking database work, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._db, method, *args)

    async def resume(self) -> None:
        """At start: queue again what the last run left running, and run every queued job."""
        requeued = await self._call(self.store.requeue_interrupted)
        if requeued:
            log.info("Resuming jobs interrupted by the last stop: %s", requeued)
        for course in await self._call(self.store.queued_courses):
            if course in self.courses:
                self._kick(course)
            else:
                error = f"course {course} is no longer served"
                await self._call(self.store.fail_queued, course, error)

    async def submit(
        self, course: Course, action: str, batch: list[list[str]], user: str
    ) -> Submitted:
        """Queue one job per list of ids (or join the active one), and return at once."""
        submitted = await self._call(self.store.submit, course.id, action, batch, user)
        log.info("batch %d: %s %s, jobs %s for %s", submitted.batch, course.id, action,
                 submitted.jobs, user)  # fmt: skip
        self._kick(course.id)
        return submitted

    async def wait(self, course: Course, job_id: int) -> dict[str, Any]:
        """nbgrader's result of a job, once it has finished."""
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(waiter)
        try:
            job = await self._call(self.store.job, course.id, job_id)
            if job is None:
                raise KeyError(job_id)
            if job.state not in ACTIVE:
                return result_of(job)
            return await waiter
        finally:
            waiters = self._waiters.get(job_id, [])
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(job_id, None)

    async def run(self, course: Course, action: str, args: list[str], user: str) -> dict[str, Any]:
        """One job (or the active one for the same ids), waited for: nbgrader's answer."""
        submitted = await self.submit(course, action, [args], user)
        return await self.wait(course, submitted.jobs[0])

    async def cancel(self, course: Course, batch_id: int, user: str) -> bool:
        """Cancel a batch: its queued jobs never run, its running ones are killed."""
        found = await self._call(self.store.cancel, course.id, batch_id, user)
        if found is None:
            return False
        cancelled, running = found
        for job_id in cancelled:
            self._resolve(job_id, cancelled_result(user))
        for job_id in running:
            self._cancelled[job_id] = user
            worker = self._running.get(job_id)
            if worker is not None:
                await worker.kill()
        log.info("batch %d cancelled by %s: %d queued, %d running", batch_id, user,
                 len(cancelled), len(running))  # fmt: skip
        return True

    async def job(self, course: Course, job_id: int) -> Job | None:
        return await self._call(self.store.job, course.id, job_id)

    async def batch(self, course: Course, batch_id: int) -> dict[str, Any] | None:
        return await self._call(self.store.batch, course.id, batch_id)

    async def recent(self, course: Course) -> dict[str, Any]:
        return await self._call(self.store.recent, course.id)

    def _kick(self, course_id: str) -> None:
        """Make sure lanes run the course's queued jobs."""
        self._queued.add(course_id)
        while self._lanes[course_id] < self.max_parallel and not self._stopped:
            self._lanes[course_id] += 1
            task = asyncio.create_task(self._lane(self.courses[course_id]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _lane(self, course: Course) -> None:
        """Run the course's queued jobs one after the other in one worker, started lazily.

        A lane holds a slot only while one of its jobs runs, so other courses get their turn.
        """
        worker: Worker | None = None
        try:
            while True:
                async with self._slots:
                    if self._stopped:  # also when stop() came while this lane waited for a slot
                        break
                    self._queued.discard(course.id)
                    job = await self._call(self.store.claim, course.id)
                    if job is None:
                        if course.id in self._queued:  # queued while we looked: look again
                            continue
                        break
                    if worker is None or not worker.alive:
                        try:
                            worker = await Worker.start(course)
                        except OSError as e:  # the course root cannot be made, no Python...
                            await self._finish(job.id, FAILED, {"error": f"no worker: {e}"})
                            continue
                        self._workers.add(worker)
                    await self._run(worker, course, job)
        finally:
            self._lanes[course.id] -= 1
            if worker is not None:
                self._workers.discard(worker)
                await (worker.close() if worker.alive else worker.kill())

    async def _run(self, worker: Worker, course: Course, job: Job) -> None:
        log.info("job %d: %s %s %s for %s", job.id, course.id, job.action, job.args, job.user)
        self._running[job.id] = worker
        try:
            result = await worker.run(course, job.action, job.args, self.timeout)
        finally:
            self._running.pop(job.id, None)
        if self._stopped:
            return  # left running: the next start of the service runs it again
        cancelled_by = self._cancelled.pop(job.id, None)
        if cancelled_by is not None:
            state, result = CANCELLED, cancelled_result(cancelled_by)
        else:
            state = DONE if result.get("success") else FAILED
        await self._finish(job.id, state, result)

    async def _finish(self, job_id: int, state: str, result: dict[str, Any]) -> None:
        """Record how a job ended, then answer whoever waits for it."""
        await self._call(self.store.finish, job_id, state, result)
        log.info("job %d %s", job_id, state)
        self._resolve(job_id, {"success": state == DONE, **result})

    def _resolve(self, job_id: int, result: dict[str, Any]) -> None:
        for waiter in self._waiters.pop(job_id, []):
            if not waiter.done():
                waiter.set_result(result)

    async def stop(self) -> None:
        """Kill running workers (and their kernels); their jobs stay running in the database,
        so the next start runs them again."""
        self._stopped = True
        await asyncio.gather(*(worker.kill() for worker in list(self._workers)))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._db.shutdown(wait=True)
