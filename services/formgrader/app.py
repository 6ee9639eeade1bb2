"""The formgrader service application."""

import re
from typing import Any, ClassVar

from tornado.web import authenticated
from traitlets import TraitError, Unicode, validate

from ..common.app import HubServiceApp
from ..common.web import BaseHandler


class FormGrader(HubServiceApp):
    """Serves nbgrader's formgrader for every course to that course's graders and hub admins."""

    service_name: ClassVar[str] = "formgrader"
    title: ClassVar[str] = "Formgrader"
    default_port: ClassVar[int] = 10103
    description = __doc__

    grader_group_pattern = Unicode(
        "formgrade-{course}",
        help="Hub group whose members grade a course; {course} stands for the course id.",
    ).tag(config=True)

    @validate("grader_group_pattern")
    def _one_course_placeholder(self, proposal: dict[str, Any]) -> str:
        if proposal["value"].count("{course}") != 1:
            raise TraitError("grader_group_pattern must contain {course} exactly once")
        return proposal["value"]

    def graded_courses(self, model: dict[str, Any]) -> list[str]:
        """The course ids whose grader group this user is in."""
        before, after = self.grader_group_pattern.split("{course}")
        pattern = re.compile(re.escape(before) + "(.+)" + re.escape(after))
        matches = (pattern.fullmatch(group) for group in model.get("groups", []))
        return sorted(m.group(1) for m in matches if m)

    def user_allowed(self, model: dict[str, Any]) -> bool:
        return super().user_allowed(model) or bool(self.graded_courses(model))

    def service_handlers(self) -> list[tuple]:
        return [("", CoursesHandler)]


class CoursesHandler(BaseHandler):
    """The courses this user grades."""

    @authenticated
    def get(self) -> None:
        self.render_page("index.html", courses=self.service.graded_courses(self.current_user))
