"""Courses at run time: which ids and titles are accepted, and the table that keeps them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tornado.web import HTTPError

from hubservices.common.db import Database
from hubservices.common.hubapi import HubAPI
from hubservices.formgrader.catalog import (
    CourseError,
    CourseStore,
    GraderGroups,
    check_new_course,
    check_title,
    check_user_name,
)
from hubservices.formgrader.catalogpages import course_errors
from tests.unit.fakehub import FakeHub, Reply, error

RESERVED = {"api", "metrics"}


def test_a_new_course_follows_the_course_id_rule() -> None:
    checked = check_new_course("phys-2", "  Physics 2 ", {"c1"}, set(), RESERVED)
    assert checked == ("phys-2", "Physics 2")
    for bad in ["", "../etc", ".hidden", "a/b", "a b", "<img>", "x" * 129, 7, None]:
        with pytest.raises(CourseError) as e:
            check_new_course(bad, "T", set(), set(), RESERVED)
        assert e.value.status == 400, bad


def test_taken_and_reserved_ids_are_refused() -> None:
    with pytest.raises(CourseError, match="from config") as e:
        check_new_course("c1", "T", {"c1"}, set(), RESERVED)
    assert e.value.status == 409
    with pytest.raises(CourseError, match="retired") as e:
        check_new_course("old", "T", set(), {"old"}, RESERVED)
    assert e.value.status == 409
    with pytest.raises(CourseError, match="route of this service"):
        check_new_course("api", "T", set(), set(), RESERVED)


@pytest.mark.parametrize("title", ["", "   ", "a\nb", "x" * 201, None, 3])
def test_bad_titles(title: object) -> None:
    with pytest.raises(CourseError):
        check_title(title)


def test_user_names() -> None:
    assert check_user_name(" dana ") == "dana"
    for bad in ["", " ", None, "x" * 256]:
        with pytest.raises(CourseError):
            check_user_name(bad)


def test_store_adds_retitles_and_retires_across_a_restart(tmp_path: Path) -> None:
    def opened() -> CourseStore:
        db = Database(
            f"sqlite:///{tmp_path / 'fg.sqlite'}",
            migrations="hubservices.formgrader.migrations",
            version_table="alembic_version_formgrader",
        )
        db.upgrade()
        return CourseStore(db)

    store = opened()
    store.add("c2", "Course two", "admin")
    assert store.retitle("c2", "Course 2").title == "Course 2"
    assert store.retire("c2", "admin").retired_at is not None
    with pytest.raises(CourseError) as e:
        store.retitle("c2", "again")  # retired: no more changes
    assert e.value.status == 404
    with pytest.raises(CourseError):
        store.retire("nope", "admin")
    [course] = opened().all()
    assert (course.id, course.title, course.created_by) == ("c2", "Course 2", "admin")
    assert course.retired_at is not None


# -- the hub's side, with faults (a fake hub) ---------------------------------------------------


@pytest.fixture
async def groups() -> AsyncIterator[tuple[FakeHub, GraderGroups]]:
    fake = FakeHub(users=["dana"])
    await fake.start()
    async with HubAPI(fake.url, "token", retries=1, backoff_base=0.01) as api:
        yield fake, GraderGroups(api, "formgrade-{course}")
    await fake.stop()


async def test_an_existing_group_is_kept_and_a_deleted_one_made_again(
    groups: tuple[FakeHub, GraderGroups],
) -> None:
    fake, graders = groups
    fake.script("POST", "/groups/formgrade-c1", error(409, "Group formgrade-c1 already exists"))
    await graders.create("c1")  # made by hand before: fine
    fake.script("POST", "/groups/formgrade-c1/users", error(404, "No such group"), Reply(200, {}))
    fake.script("POST", "/groups/formgrade-c1", Reply(201, {}))
    await graders.add("c1", "dana")
    assert [r.method for r in fake.requests_to("/groups/formgrade-c1/users")] == ["POST", "POST"]


async def test_hub_refusals_and_failures_become_clear_answers(
    groups: tuple[FakeHub, GraderGroups],
) -> None:
    fake, graders = groups
    fake.script("POST", "/groups/formgrade-c1/users", error(400, "No such user: nobody"))
    with pytest.raises(HTTPError) as refused, course_errors():
        await graders.add("c1", "nobody")
    assert refused.value.status_code == 400 and "No such user: nobody" in str(refused.value)
    fake.script("POST", "/groups/formgrade-c2", *[error(500, "boom")] * 3)
    with pytest.raises(HTTPError) as failed, course_errors():
        await graders.create("c2")
    assert failed.value.status_code == 503 and "nothing changed" in str(failed.value)
    assert "token" not in str(failed.value)
