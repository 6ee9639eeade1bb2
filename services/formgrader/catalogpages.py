"""Courses at run time in the service: the catalog, the per-request course router, and the
routes of hub admins (``api/courses``, the index page's forms) and of a course's graders
(``<course>/graders``, ``<course>/api/graders``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

from tornado.httputil import HTTPServerRequest
from tornado.routing import Router
from tornado.web import Application, HTTPError, authenticated

from ..common.hubapi import HubAPIError
from ..common.web import APIHandler, BaseHandler
from .adapter import CourseAccess, CourseAPIAccess
from .catalog import CourseError, CourseStore, GraderGroups, StoredCourse, check_new_course
from .catalog import check_title as checked_title
from .courses import Course, parse_courses

if TYPE_CHECKING:
    from tornado.httputil import HTTPMessageDelegate

    from .app import FormGrader


class CourseRouter(Router):
    """``<prefix><course>/...`` to that course's application, looked up on every request, so
    that a course added or retired while the service runs is served or gone at once."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.apps: dict[str, Application] = {}

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> HTTPMessageDelegate | None:
        # the id as the course's own routes match it: literal or percent-encoded (c%2B%2B)
        course_id = unquote((request.path or "")[len(self.prefix) :].split("/", 1)[0])
        app = self.apps.get(course_id)
        # None: not a course; the service's own routes get the request
        return app.find_handler(request, **kwargs) if app is not None else None


@dataclass(frozen=True)
class CourseListing:
    """A course on the admins' list."""

    id: str
    title: str
    source: str  # "from config" or "added by <user>"
    retired: bool

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Catalog:
    """Adds, retitles and retires the courses stored in the service's database, and serves
    them through the service; creates each one's grader group on the hub."""

    def __init__(self, service: FormGrader, store: CourseStore) -> None:
        self.service = service
        self.store = store
        self.groups = GraderGroups(service.hub, service.grader_group_pattern)
        self.stored: dict[str, StoredCourse] = {}
        #: One change at a time: two admins creating the same id get one course and a 409.
        self._lock = asyncio.Lock()

    async def load(self) -> list[StoredCourse]:
        """The stored courses; the ones not retired, to serve."""
        self.stored = {c.id: c for c in await asyncio.to_thread(self.store.all)}
        return [c for c in self.stored.values() if c.retired_at is None]

    def course(self, course_id: str) -> Course:
        """A stored course's settings: its own directory, SQLite gradebook, the exchange."""
        root = f"{self.service.courses_dir.rstrip('/')}/{course_id}"
        return parse_courses({course_id: {"root": root}}, self.service.exchange)[course_id]

    def listing(self) -> list[CourseListing]:
        config = [CourseListing(c, c, "from config", False) for c in self.service.config_course_ids]
        stored = [
            CourseListing(c.id, c.title, f"added by {c.created_by}", c.retired_at is not None)
            for c in self.stored.values()
        ]
        return sorted(config + stored, key=lambda c: (c.retired, c.id))

    async def create(self, course_id: object, title: object, user: str) -> StoredCourse:
        async with self._lock:
            checked_id, checked = check_new_course(
                course_id,
                title,
                self.service.config_course_ids,
                self.stored,
                self.service.reserved_course_ids(),
            )
            await self.groups.create(checked_id)
            runtime = await asyncio.to_thread(self.service.open_course, self.course(checked_id))
            stored = await asyncio.to_thread(self.store.add, checked_id, checked, user)
            self.stored[checked_id] = stored
            self.service.serve_runtime(runtime)
            return stored

    async def retitle(self, course_id: str, title: object) -> StoredCourse:
        async with self._lock:
            self._refuse_config(course_id)
            stored = await asyncio.to_thread(self.store.retitle, course_id, checked_title(title))
            self.stored[course_id] = stored
            return stored

    async def retire(self, course_id: str, user: str) -> StoredCourse:
        async with self._lock:
            self._refuse_config(course_id)
            stored = await asyncio.to_thread(self.store.retire, course_id, user)
            self.stored[course_id] = stored
            self.service.stop_serving(course_id)
            return stored

    def _refuse_config(self, course_id: str) -> None:
        if course_id in self.service.config_course_ids:
            raise CourseError(f"course {course_id} is from config: change the config file", 409)


class CatalogAccess(BaseHandler):
    """Hub admins only, and only when the service manages courses."""

    @property
    def catalog(self) -> Catalog:
        service = cast("FormGrader", self.service)
        if not service.manage_courses:
            raise HTTPError(404, "Courses are managed in the config file here.")
        if not self.current_user.get("admin"):
            raise HTTPError(403, "Only hub admins add, retitle and retire courses.")
        return service.catalog

    async def changed(self, change: Any) -> StoredCourse:
        with course_errors():
            stored: StoredCourse = await change
        return stored


class CoursesAPI(CatalogAccess, APIHandler):
    """``GET api/courses``: every course; ``POST {"id", "title"}``: add one (201)."""

    @authenticated
    def get(self) -> None:
        self.write_json([c.to_json() for c in self.catalog.listing()])

    @authenticated
    async def post(self) -> None:
        catalog = self.catalog
        body = json_body(self)
        stored = await self.changed(
            catalog.create(body.get("id"), body.get("title"), self.current_user["name"])
        )
        self.set_header("Location", f"{self.service.service_prefix}{stored.id}/")
        self.write_json(listed(catalog, stored.id), 201)


class CourseAPI(CatalogAccess, APIHandler):
    """``PATCH api/courses/<id> {"title"}``: retitle; ``DELETE``: retire."""

    @authenticated
    async def patch(self, course_id: str) -> None:
        catalog = self.catalog
        await self.changed(catalog.retitle(course_id, json_body(self).get("title")))
        self.write_json(listed(catalog, course_id))

    @authenticated
    async def delete(self, course_id: str) -> None:
        catalog = self.catalog
        await self.changed(catalog.retire(course_id, self.current_user["name"]))
        self.write_json(listed(catalog, course_id))


class CoursesForm(CatalogAccess):
    """``POST courses``: the index page's forms (create, retitle, retire), then back to it."""

    @authenticated
    async def post(self) -> None:
        catalog = self.catalog
        action = self.get_body_argument("action", "")
        course_id = self.get_body_argument("id", "")
        title = self.get_body_argument("title", "")
        if action == "create":
            await self.changed(catalog.create(course_id, title, self.current_user["name"]))
        elif action == "retitle":
            await self.changed(catalog.retitle(course_id, title))
        elif action == "retire":
            await self.changed(catalog.retire(course_id, self.current_user["name"]))
        else:
            raise HTTPError(400, "action must be create, retitle or retire")
        self.redirect(self.service.service_prefix)


@contextlib.contextmanager
def course_errors() -> Iterator[None]:
    """A refused change as its HTTP status; a hub that fails as a 503 naming it (nothing was
    stored: a course's group is made before its row, and an existing group is reused)."""
    try:
        yield
    except CourseError as e:
        raise HTTPError(e.status, str(e)) from None
    except HubAPIError as e:
        raise HTTPError(503, f"The hub failed; nothing changed here. ({e})") from None


def json_body(handler: BaseHandler) -> dict[str, Any]:
    """The request's JSON object; a 400 saying so otherwise."""
    try:
        body = json.loads(handler.request.body or b"{}")
    except ValueError:
        raise HTTPError(400, "The body must be JSON.") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "The body must be a JSON object.")
    return body


def listed(catalog: Catalog, course_id: str) -> dict[str, Any]:
    return next(c for c in catalog.listing() if c.id == course_id).to_json()


# -- a course's graders ------------------------------------------------------------------------


class GradersAccess(CourseAccess):
    """The course's graders (and admins) change its grader group on the hub."""

    @property
    def groups(self) -> GraderGroups:
        service = cast("FormGrader", self.service)
        if not service.manage_courses:
            raise HTTPError(404, "Grader groups are managed on the hub here.")
        return service.catalog.groups

    async def change(self, action: str, user: str) -> None:
        groups = self.groups
        with course_errors():
            if action == "add":
                await groups.add(self.course.id, user)
            elif action == "remove":
                await groups.remove(self.course.id, user)
            else:
                raise HTTPError(400, "action must be add or remove")

    async def members(self) -> list[str]:
        with course_errors():
            return await self.groups.members(self.course.id)


class GradersPage(GradersAccess):
    """``<course>/graders``: the course's graders; forms to add and remove co-graders."""

    @authenticated
    async def get(self) -> None:
        groups = self.groups
        self.render_page(
            "graders.html",
            course=self.course,
            group=groups.group(self.course.id),
            graders=await self.members(),
            base=f"{self.service.service_prefix}{self.course.id}/",
        )

    @authenticated
    async def post(self) -> None:
        await self.change(self.get_body_argument("action", ""), self.get_body_argument("user", ""))
        self.redirect(f"{self.service.service_prefix}{self.course.id}/graders")


class GradersAPI(GradersAccess, CourseAPIAccess):
    """``GET <course>/api/graders``; ``POST {"user"}`` adds, ``DELETE .../<user>`` removes."""

    @authenticated
    async def get(self) -> None:
        await self.answer()

    @authenticated
    async def post(self) -> None:
        await self.change("add", json_body(self).get("user", ""))
        await self.answer()

    @authenticated
    async def delete(self, user: str) -> None:
        await self.change("remove", user)
        await self.answer()

    async def answer(self) -> None:
        groups = self.groups
        self.write_json(
            {
                "group": groups.group(self.course.id),
                "graders": await self.members(),
            }
        )


def catalog_handlers() -> list[tuple[str, type]]:
    """The admins' routes, relative to the service prefix."""
    return [
        ("api/courses", CoursesAPI),
        ("api/courses/([^/]+)", CourseAPI),
        ("courses", CoursesForm),
    ]


def course_catalog_handlers() -> list[tuple[str, type, dict[str, Any]]]:
    """The graders' routes, relative to a course."""
    return [
        ("graders", GradersPage, {}),
        ("api/graders", GradersAPI, {}),
        ("api/graders/([^/]+)", GradersAPI, {}),
    ]
