"""The formgrader's own routes: course list and page, long actions, jobs, grade exports."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nbgrader.coursedir import CourseDirectory
from nbgrader.plugins.export import CsvExportPlugin
from tornado.web import HTTPError, authenticated

from ..common.web import BaseHandler, Setting
from .adapter import CourseAccess, CourseAPIAccess
from .courses import is_safe_id
from .jobs import Jobs, Submitted, job_to_dict
from .studentpages import FEEDBACK_FRAMES_CSP, grades_of

if TYPE_CHECKING:
    from .app import FormGrader

#: Our routes' action names, and the NbGraderAPI method (``worker.ACTIONS``) each runs.
ASSIGNMENT_ACTIONS = {
    "generate": "generate_assignment",
    "release": "release_assignment",
    "unrelease": "unrelease",
    "collect": "collect",
    "generate_feedback": "generate_feedback",
    "release_feedback": "release_feedback",
}
SUBMISSION_ACTIONS = {
    "autograde": "autograde",
    "generate_feedback": "generate_feedback",
    "release_feedback": "release_feedback",
}


def unsafe_submissions(coursedir: CourseDirectory) -> list[tuple[str, str]]:
    """(student, assignment) directories under ``submitted/`` whose names are not valid ids.

    Such a name never reaches a URL, a grader's page or a worker: a student id like
    ``<img src=x onerror=...>`` or ``=cmd|x`` is skipped, and the course page says so.
    """
    submitted = Path(coursedir.root) / coursedir.submitted_directory
    if not submitted.is_dir():
        return []
    found = []
    for student in sorted(submitted.iterdir()):
        if not student.is_dir():
            continue
        for assignment in sorted(student.iterdir()):
            if assignment.is_dir() and not (
                is_safe_id(student.name) and is_safe_id(assignment.name)
            ):
                found.append((student.name, assignment.name))
    return found


class CoursesHandler(BaseHandler):
    """``/``: the courses this user grades, with links to each, and their own grades."""

    @authenticated
    async def get(self) -> None:
        service = cast("FormGrader", self.service)
        graded = service.courses_of(self.current_user)
        manages = service.manage_courses and bool(self.current_user.get("admin"))
        self.set_header("Content-Security-Policy", FEEDBACK_FRAMES_CSP)
        self.render_page(
            "index.html",
            courses=[c for c in graded if c in service.runtimes],
            unconfigured=[c for c in graded if c not in service.runtimes],
            grades=await grades_of(service, self.current_user["name"]),
            catalog=service.catalog.listing() if manages else None,
        )


class CourseHandler(CourseAccess):
    """``<course>/``: the way into nbgrader's pages, grade exports, and the course's jobs.

    Jobs and their progress are drawn by ``static/course.js`` from ``api/jobs``.
    """

    @authenticated
    async def get(self) -> None:
        loop = asyncio.get_running_loop()
        assignments = await loop.run_in_executor(self.runtime.executor, self._assignments)
        unsafe = await loop.run_in_executor(None, unsafe_submissions, self.coursedir)
        self.render_page(
            "course.html",
            course=self.course,
            base=f"{self.service.service_prefix}{self.course.id}/",
            assignments=assignments,
            unsafe=unsafe,
        )

    def _assignments(self) -> list[str]:
        try:
            return sorted(a.name for a in self.gradebook.assignments)
        finally:
            self.gradebook.db.remove()


class FormgraderRootHandler(CourseAccess):
    """``<course>/formgrader``: to nbgrader's first page (nbgrader's own reloads its config)."""

    @authenticated
    def get(self) -> None:
        self.redirect(
            f"{self.service.service_prefix}{self.course.id}/formgrader/manage_assignments"
        )


class ActionHandler(CourseAPIAccess):
    """nbgrader's long-action routes (``.../assign``, ``/collect``, ``/autograde``...).

    Same URL and answer as nbgrader's (its page waits for ``{success, log, error}``), but the
    NbGraderAPI call is a job run in a worker process (``jobs.Jobs``), so the loop keeps
    serving everyone else meanwhile, and a job already active for the same ids is joined.
    """

    jobs = Setting(Jobs)

    def initialize(self, action: str) -> None:
        self.action = action

    @authenticated
    async def post(self, *ids: str) -> None:
        result = await self.jobs.run(
            self.course, self.action, list(ids), self.current_user["name"]
        )
        # nbgrader's page JSON.parse()s the answer itself: as JSON, jQuery would hand it an
        # object already, and the page would show nothing; nbgrader answers it as text
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(json.dumps(result))


class JobsAPI(CourseAPIAccess):
    """Jobs asked for on our own routes: queued at once, answered 202 with their ids."""

    jobs = Setting(Jobs)

    def accepted(self, submitted: Submitted, **more: Any) -> None:
        location = f"{self.service.service_prefix}{self.course.id}/api/batches/{submitted.batch}"
        self.set_header("Location", location)
        self.write_json({"batch": submitted.batch, "jobs": submitted.jobs, **more}, 202)

    async def queue(self, action: str, batch: list[list[str]]) -> Submitted:
        return await self.jobs.submit(self.course, action, batch, self.current_user["name"])


class AutogradeAllHandler(JobsAPI):
    """``POST <course>/api/assignment/<id>/autograde``: a batch, one job per submission.

    Answers at once: the batch id, each student's job id, and the submissions skipped because
    their directory's name is not a valid id. ``max_workers`` workers grade the batch, each
    student after student.
    """

    @authenticated
    async def post(self, assignment_id: str) -> None:
        loop = asyncio.get_running_loop()
        # CourseAPI lists valid ids only; the invalid ones are reported, never graded
        students = sorted(
            await loop.run_in_executor(None, self.api.get_submitted_students, assignment_id)
        )
        unsafe = await loop.run_in_executor(None, unsafe_submissions, self.coursedir)
        submitted = await self.queue("autograde", [[assignment_id, s] for s in students])
        self.accepted(
            submitted,
            students=dict(zip(students, submitted.jobs, strict=True)),
            skipped=[student for student, assignment in unsafe if assignment == assignment_id],
        )


class AssignmentActionHandler(JobsAPI):
    """``POST <course>/api/assignment/<id>/<action>``: generate, release, collect, feedback."""

    @authenticated
    async def post(self, assignment_id: str, action: str) -> None:
        self.accepted(await self.queue(ASSIGNMENT_ACTIONS[action], [[assignment_id]]))


class SubmissionActionHandler(JobsAPI):
    """``POST <course>/api/submission/<assignment>/<student>/<action>``: one submission."""

    @authenticated
    async def post(self, assignment_id: str, student_id: str, action: str) -> None:
        self.accepted(await self.queue(SUBMISSION_ACTIONS[action], [[assignment_id, student_id]]))


class JobsHandler(JobsAPI):
    """``GET <course>/api/jobs``: this course's latest jobs and batches, with progress."""

    @authenticated
    async def get(self) -> None:
        self.write_json(await self.jobs.recent(self.course))


class JobHandler(JobsAPI):
    """``GET <course>/api/jobs/<id>``: one job, nbgrader's log included."""

    @authenticated
    async def get(self, job_id: str) -> None:
        job = await self.jobs.job(self.course, int(job_id))
        if job is None:
            raise HTTPError(404, f"No job {job_id} in {self.course.id}.")
        self.write_json(job_to_dict(job, with_log=True))


class BatchHandler(JobsAPI):
    """``GET <course>/api/batches/<id>``: done of total, and each failure with its reason."""

    @authenticated
    async def get(self, batch_id: str) -> None:
        self.write_json(await self.found(batch_id))

    async def found(self, batch_id: str) -> dict[str, Any]:
        batch = await self.jobs.batch(self.course, int(batch_id))
        if batch is None:
            raise HTTPError(404, f"No batch {batch_id} in {self.course.id}.")
        return batch


class CancelBatchHandler(BatchHandler):
    """``POST <course>/api/batches/<id>/cancel``: its queued jobs never run, running ones die."""

    @authenticated
    async def post(self, batch_id: str) -> None:
        if not await self.jobs.cancel(self.course, int(batch_id), self.current_user["name"]):
            raise HTTPError(404, f"No batch {batch_id} in {self.course.id}.")
        self.write_json(await self.found(batch_id))


class GradesExportHandler(CourseAccess):
    """``<course>/export/grades.csv`` and ``<course>/export/<assignment>/grades.csv``.

    nbgrader's own CSV export (``nbgrader export``), as a download.
    """

    @authenticated
    async def get(self, assignment_id: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        csv = await loop.run_in_executor(self.runtime.executor, self._export, assignment_id)
        name = (
            f"{self.course.id}-{assignment_id}-grades.csv"
            if assignment_id
            else (f"{self.course.id}-grades.csv")
        )
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(csv)

    def _export(self, assignment_id: str | None) -> str:
        if assignment_id and assignment_id not in {a.name for a in self.gradebook.assignments}:
            self.gradebook.db.remove()
            raise HTTPError(404, f"No assignment {assignment_id} in {self.course.id}.")
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "grades.csv"
            exporter = CsvExportPlugin(
                to=str(dest), assignment=[assignment_id] if assignment_id else []
            )
            try:
                exporter.export(self.gradebook)
            finally:
                self.gradebook.db.remove()
            return dest.read_text()


def course_handlers() -> list[tuple[str, type, dict[str, Any]]]:
    """Our routes relative to a course, next to nbgrader's."""
    return [
        ("", CourseHandler, {}),
        ("api/jobs", JobsHandler, {}),
        (r"api/jobs/(\d+)", JobHandler, {}),
        (r"api/batches/(\d+)", BatchHandler, {}),
        (r"api/batches/(\d+)/cancel", CancelBatchHandler, {}),
        ("api/assignment/([^/]+)/autograde", AutogradeAllHandler, {}),
        (f"api/assignment/([^/]+)/({'|'.join(ASSIGNMENT_ACTIONS)})", AssignmentActionHandler, {}),
        (
            f"api/submission/([^/]+)/([^/]+)/({'|'.join(SUBMISSION_ACTIONS)})",
            SubmissionActionHandler,
            {},
        ),
        ("export/grades.csv", GradesExportHandler, {}),
        ("export/([^/]+)/grades.csv", GradesExportHandler, {}),
    ]
