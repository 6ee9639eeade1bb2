"""Long nbgrader actions in worker processes: bounded, timed out, visible while they run.

The event loop only waits on the processes, so every other request keeps being answered while
an autograde runs; at most ``max_parallel`` jobs run at once, the rest queue. A batch of jobs
(autograde of every submission) reuses a worker for job after job: starting Python and
importing nbgrader costs seconds, more than autograding a small notebook does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from .courses import Course, worker_env
from .worker import course_to_json

log = logging.getLogger(__name__)

#: Finished jobs remembered for the status page and API.
HISTORY = 200
#: Characters of a worker's stderr kept for the error of a job it died in.
STDERR_TAIL = 4000
#: Bytes a result line may have (nbgrader's captured log is in it).
RESULT_LIMIT = 64 * 2**20
#: The result of a job that never ran because the service stopped.
STOPPED = {"success": False, "error": "the service stopped before this job ran"}


@dataclass
class Job:
    """One action as the status page shows it."""

    id: int
    course: str
    action: str
    args: list[str]
    user: str
    state: str = "queued"  # queued, running, done, failed
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Worker:
    """One ``hubservices.formgrader.worker`` process of a course, running jobs one at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._stderr = ""
        self._drain = asyncio.create_task(self._keep_stderr_tail())

    @classmethod
    async def start(cls, course: Course) -> Worker:
        course.root.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hubservices.formgrader.worker",
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
        return json.loads(line)

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
    """Runs worker processes for every course of the service."""

    def __init__(self, *, max_parallel: int, timeout: float) -> None:
        self.max_parallel = max_parallel
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_parallel)
        self._ids = itertools.count(1)
        self._jobs: deque[Job] = deque(maxlen=HISTORY)
        self._workers: set[Worker] = set()
        self._stopped = False

    def recent(self, course_id: str) -> list[dict[str, Any]]:
        """This course's jobs, newest first."""
        return [job.to_dict() for job in reversed(self._jobs) if job.course == course_id]

    async def run(self, course: Course, action: str, args: list[str], user: str) -> dict[str, Any]:
        """Run ``action`` and return nbgrader's result dict; a failure is a result, not a raise."""
        return (await self.run_batch(course, action, [args], user))[0]

    async def run_batch(
        self, course: Course, action: str, batch: list[list[str]], user: str
    ) -> list[dict[str, Any]]:
        """Run ``action`` once per list of ids; results in the same order.

        Up to ``max_parallel`` workers take the queued jobs one after the other, each holding a
        slot only while one of its jobs runs, so other actions still get their turn.
        """
        jobs = [Job(next(self._ids), course.id, action, list(args), user) for args in batch]
        self._jobs.extend(jobs)
        queue = deque(jobs)
        results: dict[int, dict[str, Any]] = {}
        lanes = min(self.max_parallel, len(jobs))
        await asyncio.gather(*(self._lane(course, queue, results) for _ in range(lanes)))
        return [results.get(job.id, STOPPED) for job in jobs]

    async def _lane(self, course: Course, queue: deque[Job], results: dict[int, Any]) -> None:
        """Run queued jobs in one worker, started at the first job, again after a dead one."""
        worker: Worker | None = None
        try:
            while queue and not self._stopped:
                async with self._slots:
                    if not queue or self._stopped:
                        break
                    job = queue.popleft()
                    if worker is None or not worker.alive:
                        worker = await Worker.start(course)
                        self._workers.add(worker)
                    results[job.id] = await self._run(worker, course, job)
        finally:
            if worker is not None:
                self._workers.discard(worker)
                await (worker.close() if worker.alive else worker.kill())

    async def _run(self, worker: Worker, course: Course, job: Job) -> dict[str, Any]:
        job.state, job.started_at = "running", time.time()
        log.info("job %d: %s %s %s for %s", job.id, course.id, job.action, job.args, job.user)
        try:
            result = await worker.run(course, job.action, job.args, self.timeout)
        finally:
            job.finished_at = time.time()
        job.state = "done" if result.get("success") else "failed"
        log.info("job %d %s in %.1fs", job.id, job.state, job.finished_at - job.started_at)
        return result

    async def stop(self) -> None:
        """Kill running workers (and their kernels): a restart must not leave them behind."""
        self._stopped = True
        await asyncio.gather(*(worker.kill() for worker in list(self._workers)))
