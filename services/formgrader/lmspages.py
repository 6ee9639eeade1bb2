"""``<course>/export/{canvas,moodle}.csv`` and ``<course>/export/<assignment>/{...}.csv``:
grades in an LMS's import layout (:mod:`.lms`), for the course's graders."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from tornado.web import HTTPError, authenticated

from .adapter import CourseAccess
from .lms import EXPORTS, LmsSettings, grade_table

if TYPE_CHECKING:
    from .app import FormGrader


class LmsExportHandler(CourseAccess):
    """One LMS's CSV of the whole course or one assignment, as a download."""

    @authenticated
    async def get(self, *ids: str) -> None:
        assignment, lms = (None, ids[0]) if len(ids) == 1 else ids
        settings = cast("FormGrader", self.service).lms_settings.get(self.course.id, LmsSettings())
        loop = asyncio.get_running_loop()
        table = await loop.run_in_executor(
            self.runtime.executor, self.in_request_session, lambda: self._table(assignment)
        )
        name = "-".join(filter(None, [self.course.id, assignment, lms, "grades.csv"]))
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(EXPORTS[lms](table, settings))

    def _table(self, assignment: str | None) -> Any:
        table = grade_table(self.gradebook, assignment)
        if assignment and not table.assignments:
            raise HTTPError(404, f"No assignment {assignment} in {self.course.id}.")
        return table


def lms_handlers() -> list[tuple[str, type, dict[str, Any]]]:
    """The exports' routes, relative to a course."""
    formats = "|".join(EXPORTS)
    return [
        (f"export/({formats}).csv", LmsExportHandler, {}),
        (f"export/([^/]+)/({formats}).csv", LmsExportHandler, {}),
    ]
