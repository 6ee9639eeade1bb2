"""Students' own grades page under a real hub: nothing before the instructor releases feedback,
then the score and the feedback (sandboxed), never another student's.

One hub of our own for the module (formgrader only, one course); the tests run in file order.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog

from tests.harness.autograde import RIGHT
from tests.harness.formgrader import (
    SAMPLE,
    Grader,
    answer,
    formgrader_hub,
    student_run,
    wait_batch,
)
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

#: student1's written answer tries to run script in whoever views their feedback.
XSS = "<script>alert('pwned')</script><img src=x onerror=\"alert('pwned')\">"
HOME = "/services/formgrader/"


@pytest.fixture(scope="module")
def fg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = formgrader_hub(tmp_path_factory.mktemp("grades"), {"course1": ["teacher1"]})
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def logged_in(hub: Hub, student: str) -> httpx.Client:
    """``student``'s browser, logged in to the service (OAuth through the hub)."""
    client = hub.browser(student)
    assert client.get(HOME).status_code == 200
    return client


def grades(hub: Hub, student: str) -> dict:
    r = logged_in(hub, student).get(HOME + "api/grades")
    assert r.status_code == 200, r.text
    return r.json()


def run_job(teacher: Grader, path: str) -> None:
    r = teacher.send("POST", path)
    assert r.status_code == 202, r.text
    batch = wait_batch(teacher, r.json()["batch"])
    assert batch["failures"] == [], batch


def test_nothing_until_release_then_score_and_feedback(fg: Hub) -> None:
    teacher = Grader(fg, "teacher1")
    teacher.ok("PUT", "formgrader/api/assignment/ps1", {})
    shutil.copy(SAMPLE, fg.course_root / "source" / "ps1" / "problem1.ipynb")  # type: ignore[attr-defined]
    teacher.ok("POST", "formgrader/api/assignment/ps1/assign")
    # not a student of course1 yet: no course on the page
    assert grades(fg, "student1") == {}
    for student in ("student1", "student2"):
        teacher.ok("PUT", f"formgrader/api/student/{student}", {})
    # a student, but ps1 is not released: not listed
    assert grades(fg, "student1") == {"course1": []}
    teacher.ok("POST", "formgrader/api/assignment/ps1/release")
    [row] = grades(fg, "student1")["course1"]
    assert (row["assignment"], row["submitted"], row["released"]) == ("ps1", False, False)

    for student, text in (("student1", XSS), ("student2", "Because.")):
        student_run(fg, student, "fetch_assignment", "ps1")
        answer(fg, student, RIGHT, text)
        student_run(fg, student, "submit", "ps1")
    # submitted (not collected yet): when, not late (no due date), no grade
    [row] = grades(fg, "student1")["course1"]
    assert row["submitted"] and row["submitted_at"] and not row["late"]
    assert "score" not in row and not row["released"]

    teacher.ok("POST", "formgrader/api/assignment/ps1/collect")
    run_job(teacher, "api/assignment/ps1/autograde")
    run_job(teacher, "api/assignment/ps1/generate_feedback")
    # graded, feedback generated, not released: still nothing
    for student in ("student1", "student2"):
        [row] = grades(fg, student)["course1"]
        assert row["submitted"] and not row["released"] and "score" not in row, row
        r = logged_in(fg, student).get(HOME + "api/feedback/course1/ps1/problem1")
        assert r.status_code == 404
        assert "not released yet" in logged_in(fg, student).get(HOME).text

    run_job(teacher, "api/submission/ps1/student1/release_feedback")
    [row] = grades(fg, "student1")["course1"]
    assert row["released"] and (row["score"], row["max_score"]) == (2, 3), row
    assert row["feedback"] == ["problem1"]
    student1 = logged_in(fg, "student1")
    feedback = student1.get(HOME + "api/feedback/course1/ps1/problem1")
    assert feedback.status_code == 200 and "squares" in feedback.text
    csp = feedback.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox") and "script-src" not in csp
    # student2's is not released: nothing of it, by any URL
    [row] = grades(fg, "student2")["course1"]
    assert not row["released"] and "score" not in row
    student2 = logged_in(fg, "student2")
    assert student2.get(HOME + "api/feedback/course1/ps1/problem1").status_code == 404


def test_no_other_students_rows_by_any_url(fg: Hub) -> None:
    student2 = logged_in(fg, "student2")
    released = next((fg.exchange / "course1" / "feedback").glob("*.html"))  # type: ignore[attr-defined]
    tampered = [
        # the student is always the logged-in user: no URL names another one
        (HOME + "api/feedback/course1/ps1/problem1", 404),
        (HOME + f"api/feedback/course1/ps1/{released.stem}", 404),
        (HOME + "api/feedback/course1/..%2F..%2Fstudent1/problem1", 400),
        (HOME + "api/feedback/course1/.ps1/problem1", 400),
        (HOME + "api/feedback/nope/ps1/problem1", 404),
        (HOME + "api/grades?student=student1", 200),
        # the graders' pages and exports stay the graders'
        (HOME + "course1/", 403),
        (HOME + "course1/formgrader/api/submissions/ps1", 403),
        (HOME + "course1/formgrader/gradebook/ps1/problem1", 403),
        (HOME + "course1/export/grades.csv", 403),
        (HOME + "course1/api/jobs", 403),
    ]
    for url, status in tampered:
        r = student2.get(url)
        assert r.status_code == status, (url, r.status_code)
        assert '"score"' not in r.text and "squares" not in r.text, url
    with httpx.Client(base_url=fg.url) as anonymous:
        assert anonymous.get(HOME + "api/grades").status_code == 403


def test_student_page_in_chromium(fg: Hub, hub_page, tmp_path: Path) -> None:
    browser = hub_page(fg, "student1")
    page = browser.page
    browser.problems.clear()  # the hub's landing page is not ours
    dialogs: list[str] = []

    def dismissed(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismissed)
    page.goto(f"{fg.url}{HOME}")
    row = page.locator("section.grades[data-course=course1] tr[data-assignment=ps1]")
    row.wait_for()
    assert row.locator("td.score").inner_text() == "2 / 3"
    assert row.locator("td.late").inner_text() == "on time"
    frame_element = page.locator("iframe.feedback")
    frame_element.wait_for()
    assert frame_element.get_attribute("sandbox") == ""
    frame = frame_element.element_handle().content_frame()
    assert frame is not None
    frame.wait_for_load_state()
    assert "squares" in frame.content()
    # student1's own markup did not run, neither in the frame nor in the page
    assert page.title() == "Formgrader"
    # every script of the feedback (nbconvert's, student1's <script>) was refused, and the
    # fonts its CSS asks for; nothing else went wrong
    blocked = "Blocked script execution in '" + f"{fg.url}{HOME}api/feedback/course1/ps1/problem1'"
    assert any(p.startswith(blocked) for p in browser.problems)
    feedback_loads = re.compile(
        rf"Loading the font '{re.escape(fg.url + HOME)}api/feedback/course1/fonts/.* blocked\.$"
    )
    assert [
        p for p in browser.problems if not p.startswith(blocked) and not feedback_loads.match(p)
    ] == []
    assert dialogs == []
    page.screenshot(path=str(tmp_path / "student1.png"), full_page=True)
    shutil.copy(tmp_path / "student1.png", fg.workdir / "student1-grades.png")

    other = hub_page(fg, "student2").page
    other.goto(f"{fg.url}{HOME}")
    row = other.locator("section.grades[data-course=course1] tr[data-assignment=ps1]")
    row.wait_for()
    assert row.locator("td.score").inner_text() == "not released yet"
    assert other.locator("iframe").count() == 0
    other.screenshot(path=str(fg.workdir / "student2-grades.png"), full_page=True)


def test_a_new_submission_hides_the_grade_until_its_feedback_is_released(fg: Hub) -> None:
    teacher = Grader(fg, "teacher1")
    student_run(fg, "student1", "submit", "ps1")
    teacher.ok("POST", "formgrader/api/assignment/ps1/collect")
    [row] = grades(fg, "student1")["course1"]
    assert row["submitted"] and not row["released"] and "score" not in row, row
    feedback = logged_in(fg, "student1").get(HOME + "api/feedback/course1/ps1/problem1")
    assert feedback.status_code == 404
