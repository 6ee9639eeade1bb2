"""The formgrader's own routes: course list and page, long actions, jobs, grade exports."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from nbgrader.plugins.export import CsvExportPlugin
from tornado.web import HTTPError, authenticated

from ..common.web import BaseHandler
from .adapter import CourseAccess, CourseAPIAccess


class CoursesHandler(BaseHandler):
    """``/``: the courses this user grades, with links to each."""

    @authenticated
    def get(self) -> None:
        service = self.service
        graded = service.courses_of(self.current_user)
        self.render_page(
            "index.html",
            courses=[c for c in graded if c in service.runtimes],
            unconfigured=[c for c in graded if c not in service.runtimes],
        )


class CourseHandler(CourseAccess):
    """``<course>/``: the way into nbgrader's pages, grade exports, and the course's jobs."""

    @authenticated
    async def get(self) -> None:
        loop = asyncio.get_running_loop()
        assignments = await loop.run_in_executor(self.runtime.executor, self._assignments)
        self.render_page(
            "course.html",
            course=self.course,
            base=f"{self.service.service_prefix}{self.course.id}/",
            assignments=assignments,
            jobs=self.service.jobs.recent(self.course.id),
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

    Same URL and answer as nbgrader's, but the NbGraderAPI call runs in a worker process
    (``jobs.Jobs``), so the loop keeps serving everyone else meanwhile.
    """

    def initialize(self, action: str) -> None:
        self.action = action

    @authenticated
    async def post(self, *ids: str) -> None:
        result = await self.service.jobs.run(
            self.course, self.action, list(ids), self.current_user["name"]
        )
        self.write_json(result)


class AutogradeAllHandler(CourseAPIAccess):
    """``POST <course>/api/assignment/<id>/autograde``: every collected submission, in parallel.

    As many workers at once as the service allows (``max_workers``), each grading student after
    student; answers per student.
    """

    @authenticated
    async def post(self, assignment_id: str) -> None:
        loop = asyncio.get_running_loop()
        submitted = self.api.get_submitted_students
        students = sorted(await loop.run_in_executor(None, submitted, assignment_id))
        results = await self.service.jobs.run_batch(
            self.course,
            "autograde",
            [[assignment_id, student] for student in students],
            self.current_user["name"],
        )
        self.write_json(
            {
                "success": all(r.get("success") for r in results),
                "students": dict(zip(students, results, strict=True)),
            }
        )


class JobsHandler(CourseAPIAccess):
    """``GET <course>/api/jobs``: this course's queued, running and recent actions."""

    @authenticated
    def get(self) -> None:
        self.write_json({"jobs": self.service.jobs.recent(self.course.id)})


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
        ("api/assignment/([^/]+)/autograde", AutogradeAllHandler, {}),
        ("export/grades.csv", GradesExportHandler, {}),
        ("export/([^/]+)/grades.csv", GradesExportHandler, {}),
    ]
