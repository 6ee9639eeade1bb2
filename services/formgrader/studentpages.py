"""A student's own grades: ``api/grades`` and released feedback at ``api/feedback/...``.

The student is always the logged-in hub user: no route takes a student id, so no URL reaches
another student's rows. The index page (``handlers.CoursesHandler``) shows the same rows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, cast

from nbgrader.coursedir import CourseDirectory
from tornado.web import HTTPError, authenticated

from ..common.csp import CONTENT_SECURITY_POLICY
from ..common.web import APIHandler, BaseHandler
from .adapter import CourseRuntime
from .courses import SANDBOX_CSP, is_safe_id
from .studentgrades import AssignmentRow, released_feedback, row_to_json, student_grades

if TYPE_CHECKING:
    from .app import FormGrader

#: The index page's policy: ours, plus frames of our own origin (the sandboxed feedback).
#: (``content_security_policy`` only extends the directives it has, and it has no frame-src.)
FEEDBACK_FRAMES_CSP = f"{CONTENT_SECURITY_POLICY}; frame-src 'self'"


def _grades_in(runtime: CourseRuntime, student: str) -> list[AssignmentRow] | None:
    coursedir = CourseDirectory(config=runtime.config)
    try:
        return student_grades(runtime.course, coursedir, runtime.gradebook, student)
    finally:
        runtime.gradebook.db.remove()


async def grades_of(service: FormGrader, student: str) -> dict[str, list[AssignmentRow]]:
    """``student``'s rows in every course whose gradebook lists them, by course id."""
    loop = asyncio.get_running_loop()
    runtimes = sorted(service.runtimes.items())
    found = await asyncio.gather(
        *(loop.run_in_executor(rt.executor, _grades_in, rt, student) for _, rt in runtimes)
    )
    courses = [course_id for course_id, _ in runtimes]
    return {course: rows for course, rows in zip(courses, found, strict=True) if rows is not None}


class GradesAPIHandler(APIHandler):
    """``GET api/grades``: the logged-in user's own rows, by course."""

    @authenticated
    async def get(self) -> None:
        grades = await grades_of(cast("FormGrader", self.service), self.current_user["name"])
        self.write_json(
            {course: [row_to_json(row) for row in rows] for course, rows in grades.items()}
        )


class FeedbackHandler(BaseHandler):
    """``GET api/feedback/<course>/<assignment>/<notebook>``: the user's released feedback.

    nbgrader's HTML, which holds the student's own output: served sandboxed (no script, an
    origin of its own), as the grading pages serve a student's files.
    """

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", SANDBOX_CSP)

    @authenticated
    async def get(self, course_id: str, assignment: str, notebook: str) -> None:
        runtimes = cast("FormGrader", self.service).runtimes
        if not all(is_safe_id(i) for i in (course_id, assignment, notebook)):
            raise HTTPError(400, "Not a valid course, assignment or notebook id.")
        runtime = runtimes.get(course_id)
        student = self.current_user["name"]
        path = None
        if runtime is not None:
            coursedir = CourseDirectory(config=runtime.config)
            path = await asyncio.to_thread(
                released_feedback, runtime.course, coursedir, student, assignment, notebook
            )
        if path is None:
            raise HTTPError(404, f"No released feedback for you on {assignment}/{notebook}.")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(await asyncio.to_thread(Path.read_bytes, path))


def student_handlers() -> list[tuple[str, type]]:
    """The student's routes, relative to the service prefix."""
    return [
        ("api/grades", GradesAPIHandler),
        ("api/feedback/([^/]+)/([^/]+)/([^/]+)", FeedbackHandler),
    ]
