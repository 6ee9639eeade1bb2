"""Long nbgrader actions as worker processes: bounded, timed out, visible while they run.

The event loop only waits on the process, so every other request keeps being answered while an
autograde runs; at most ``max_parallel`` workers run at once, the rest queue.
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

log = logging.getLogger("hubservices.formgrader.jobs")

#: Finished jobs remembered for the status page and API.
HISTORY = 200


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


class Jobs:
    """Runs worker processes for every course of the service."""

    def __init__(self, *, max_parallel: int, timeout: float) -> None:
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_parallel)
        self._ids = itertools.count(1)
        self._jobs: deque[Job] = deque(maxlen=HISTORY)
        self._procs: set[asyncio.subprocess.Process] = set()

    def recent(self, course_id: str) -> list[dict[str, Any]]:
        """This course's jobs, newest first."""
        return [job.to_dict() for job in reversed(self._jobs) if job.course == course_id]

    async def run(self, course: Course, action: str, args: list[str], user: str) -> dict[str, Any]:
        """Run ``action`` and return nbgrader's result dict; a failure is a result, not a raise."""
        job = Job(next(self._ids), course.id, action, list(args), user)
        self._jobs.append(job)
        async with self._slots:
            job.state, job.started_at = "running", time.time()
            log.info("job %d: %s %s %s for %s", job.id, course.id, action, args, user)
            try:
                result = await self._worker(course, action, args)
            finally:
                job.finished_at = time.time()
        job.state = "done" if result.get("success") else "failed"
        log.info("job %d %s in %.1fs", job.id, job.state, job.finished_at - job.started_at)
        return result

    async def _worker(self, course: Course, action: str, args: list[str]) -> dict[str, Any]:
        course.root.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "services.formgrader.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=worker_env(os.environ, os.path.dirname(sys.executable)),
            cwd=course.root,
            start_new_session=True,  # so a timeout kills the kernels it started too
        )  # fmt: skip
        self._procs.add(proc)
        job = json.dumps({"course": course_to_json(course), "action": action, "args": args})
        try:
            out, err = await asyncio.wait_for(proc.communicate(job.encode()), self.timeout)
        except TimeoutError:
            _kill_group(proc)
            await proc.wait()
            return {"success": False, "error": f"{action} took longer than {self.timeout:.0f}s"}
        finally:
            self._procs.discard(proc)
        if proc.returncode != 0:
            tail = err.decode(errors="replace")[-4000:]
            return {"success": False, "error": f"worker exited {proc.returncode}:\n{tail}"}
        return json.loads(out)

    async def stop(self) -> None:
        """Kill running workers (and their kernels): a restart must not leave them behind."""
        for proc in list(self._procs):
            _kill_group(proc)
        for proc in list(self._procs):
            await proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
