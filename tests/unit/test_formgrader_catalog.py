"""Courses at run time: which ids and titles are accepted, and the table that keeps them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubservices.common.db import Database
from hubservices.formgrader.catalog import (
    CourseError,
    CourseStore,
    check_new_course,
    check_title,
    check_user_name,
)


def test_a_new_course_follows_the_course_id_rule() -> None:
    assert check_new_course("phys-2", "  Physics 2 ", {"c1"}, set()) == ("phys-2", "Physics 2")
    for bad in ["", "../etc", ".hidden", "a/b", "a b", "<img>", "x" * 129, 7, None]:
        with pytest.raises(CourseError) as e:
            check_new_course(bad, "T", set(), set())
        assert e.value.status == 400, bad


def test_taken_and_reserved_ids_are_refused() -> None:
    with pytest.raises(CourseError, match="from config") as e:
        check_new_course("c1", "T", {"c1"}, set())
    assert e.value.status == 409
    with pytest.raises(CourseError, match="retired") as e:
        check_new_course("old", "T", set(), {"old"})
    assert e.value.status == 409
    with pytest.raises(CourseError, match="route of this service"):
        check_new_course("api", "T", set(), set())


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
