"""Courses at run time: hub admins add, retitle and retire courses; graders name co-graders.

Such a course is a row of the service's database (``models.CourseRecord``); its directory is
``FormGrader.courses_dir/<id>`` and its grader group ``formgrade-<id>`` is created on the hub,
whose membership the course's graders change from the course page. Config-file courses are
served as before, shown "from config", and not changed here.

:func:`check_new_course`, :func:`check_title` and :func:`check_user_name` decide from values
(unit-tested); :class:`CourseStore` is the database; :class:`GraderGroups` is the hub.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ..common.db import Database
from ..common.hubapi import HubAPI, HubAPIError
from ..common.timeutil import utcnow
from .courses import is_safe_id
from .models import CourseRecord

MAX_TITLE = 200
#: A hub call that changes a group's members: (group, users).
_GroupCall = Callable[[str, list[str]], Awaitable[None]]


class CourseError(ValueError):
    """A course request that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_title(title: object) -> str:
    """A course title: text of 1 to 200 characters once trimmed, on one line."""
    if not isinstance(title, str) or not title.strip():
        raise CourseError("title must be a non-empty string")
    title = title.strip()
    if len(title) > MAX_TITLE or any(c in title for c in "\r\n\0"):
        raise CourseError(f"title must be one line of at most {MAX_TITLE} characters")
    return title


def check_new_course(
    course_id: object,
    title: object,
    config_ids: Collection[str],
    stored_ids: Collection[str],
    reserved: Collection[str],
) -> tuple[str, str]:
    """The id and title of a course to create; CourseError (400, or 409 if taken) otherwise.

    Ids follow the rule of every course id (:func:`.courses.is_safe_id`); an id once used,
    also by a retired course, stays taken: its directory and gradebook are still there.
    ``reserved``: the first path segments of the service's own routes, which a course of that
    id would hide.
    """
    if not isinstance(course_id, str) or not is_safe_id(course_id):
        raise CourseError(
            "course id must be 1-128 letters, digits or '_.@+-', not starting with '.', '-' "
            "'@' or '+'"
        )
    if course_id in reserved:
        raise CourseError(f"{course_id!r} names a route of this service; choose another id")
    if course_id in config_ids:
        raise CourseError(f"course {course_id} exists (from config)", 409)
    if course_id in stored_ids:
        raise CourseError(f"course {course_id} exists or was retired; ids are not reused", 409)
    return course_id, check_title(title)


def check_user_name(name: object) -> str:
    """A hub user name to add to or remove from a grader group (the hub checks it exists)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise CourseError("user must be a hub user name")
    return name.strip()


@dataclass(frozen=True)
class StoredCourse:
    """A run-time course as the pages show it."""

    id: str
    title: str
    created_by: str
    created_at: datetime
    retired_at: datetime | None


def _stored(row: CourseRecord) -> StoredCourse:
    return StoredCourse(row.id, row.title, row.created_by, row.created_at, row.retired_at)


class CourseStore:
    """The run-time courses' table; blocking, so callers run it in a thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> list[StoredCourse]:
        with self.db.session() as session:
            return [_stored(row) for row in session.scalars(select(CourseRecord))]

    def add(self, course_id: str, title: str, user: str) -> StoredCourse:
        with self.db.session() as session:
            row = CourseRecord(id=course_id, title=title, created_by=user, created_at=utcnow())
            session.add(row)
            return _stored(row)

    def retitle(self, course_id: str, title: str) -> StoredCourse:
        with self.db.session() as session:
            row = self._active(session.get(CourseRecord, course_id), course_id)
            row.title = title
            return _stored(row)

    def retire(self, course_id: str, user: str) -> StoredCourse:
        with self.db.session() as session:
            row = self._active(session.get(CourseRecord, course_id), course_id)
            row.retired_at, row.retired_by = utcnow(), user
            return _stored(row)

    @staticmethod
    def _active(row: CourseRecord | None, course_id: str) -> CourseRecord:
        if row is None or row.retired_at is not None:
            raise CourseError(f"no course {course_id} added here (config courses stay)", 404)
        return row


class GraderGroups:
    """A course's grader group on the hub: created with the course, members changed by its
    graders. Hub errors a user caused (no such user) become CourseErrors."""

    def __init__(self, hub: HubAPI, pattern: str) -> None:
        self.hub = hub
        self.pattern = pattern

    def group(self, course_id: str) -> str:
        return self.pattern.format(course=course_id)

    async def create(self, course_id: str) -> None:
        """Create the group; one that exists already (made by hand) is kept as it is."""
        try:
            await self.hub.create_group(self.group(course_id))
        except HubAPIError as e:
            if e.status != 409:
                raise

    async def members(self, course_id: str) -> list[str]:
        try:
            group = await self.hub.get("groups", self.group(course_id))
        except HubAPIError as e:
            if e.status == 404:
                return []
            raise
        return sorted(group.get("users", []))

    async def add(self, course_id: str, user: str) -> None:
        await self._change(self.hub.add_group_users, course_id, user)

    async def remove(self, course_id: str, user: str) -> None:
        async def remove_users(group: str, users: list[str]) -> None:
            await self.hub.delete("groups", group, "users", json={"users": users})

        await self._change(remove_users, course_id, user)

    async def _change(self, call: _GroupCall, course_id: str, user: str) -> None:
        group = self.group(course_id)
        try:
            await call(group, [check_user_name(user)])
        except HubAPIError as e:
            if e.status == 404:  # the group was deleted on the hub: make it again
                await self.create(course_id)
                await call(group, [user])
            elif e.status == 400:
                raise CourseError(e.message) from None
            else:
                raise
