"""`make demo`'s round trip, every step in Chromium as its user does it (issue 16).

The instructor uploads a new assignment's notebook on the course page, generates and releases
it; two students fetch and submit it in their JupyterLab (Nbgrader > Assignment List, in the
single-user server the hub starts for them); the instructor collects, autogrades all, grades
both submissions with Next and Prev on nbgrader's grading page, generates and releases
feedback; a student reads their score and feedback on the formgrader's student page.

The hub is the demo's (``deploy/local/jupyterhub_config.py``, as tests/integration/test_demo.py
loads it). A screenshot of each step goes to the test's temp directory (``shots/``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.harness.autograde import COURSE101_ANSWERS, RIGHT
from tests.harness.chromium import BrowserPage
from tests.harness.formgrader import GRADING_READY, SAMPLE, answer_notebook, submission_of
from tests.harness.hub import ROOT, Hub

pytestmark = pytest.mark.hub

DEMO_CONFIG = ROOT / "deploy" / "local" / "jupyterhub_config.py"
COURSE = "course101"
ASSIGNMENT = "ps2"  # the demo ships ps1; this one only exists once uploaded
#: Each student's code (2 points if right), as they type it, and the instructor's score for
#: their free-text answer (1 point).
STUDENTS = {"student1": RIGHT, "student2": COURSE101_ANSWERS["wrong"]}
MANUAL = {"student1": "1", "student2": "0.5"}
#: The score each student ends with, as the pages print it.
TOTAL = {"student1": "3 / 3", "student2": "0.5 / 3"}


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Hub]:
    with Hub(tmp_path / "demo", recipe=f"load_subconfig({str(DEMO_CONFIG)!r})") as hub:
        yield hub


class Steps:
    """Screenshots, numbered in the order of the steps."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self.count = 0

    def shot(self, page: Page, name: str, full_page: bool = True) -> None:
        """``full_page=False`` for the grading page: a whole-page capture draws its sticky
        navbar where the window had scrolled to, over the notebook."""
        self.count += 1
        page.screenshot(path=self.folder / f"{self.count:02d}-{name}.png", full_page=full_page)


#: The course page's buttons whose name (aria-label) is not their text, and their batch's name.
BUTTONS = {"Autograde all": (f"Autograde every submission of {ASSIGNMENT}", "Autograde")}


def run_on_course_page(page: Page, action: str) -> None:
    """Click an action of the assignment's row and wait until its batch says it is done."""
    button, name = BUTTONS.get(action, (action, action))
    page.locator(f"tr[data-assignment='{ASSIGNMENT}']").get_by_role(
        "button", name=button, exact=True
    ).click()
    batch = page.locator("#batches tr").filter(
        has=page.locator("td:nth-child(2)", has_text=re.compile(rf"^{name}$"))
    )
    expect(batch.first).to_contain_text("instructor")
    expect(batch.first).to_contain_text(re.compile(r"(\d) of \1 done"), timeout=120_000)
    expect(batch.first.locator("ul.failures li")).to_have_count(0)


def fetch_and_submit_in_lab(student: BrowserPage, user: str, home: Path, steps: Steps) -> None:
    """In the JupyterLab the hub started at login: Nbgrader > Assignment List, fetch, submit.

    The answers are written into the fetched notebook in between (typing them in a notebook in
    JupyterLab is JupyterLab's business, not ours).
    """
    page = student.page
    page.wait_for_url(re.compile(rf"/user/{user}/lab"), timeout=90_000)
    page.get_by_role("menuitem", name="Nbgrader").click(timeout=90_000)
    page.get_by_role("menuitem", name="Assignment List").click()
    released = page.locator("#released_assignments_list")
    row = released.locator(".list_item", has_text=ASSIGNMENT)
    expect(row).to_contain_text(COURSE, timeout=30_000)
    steps.shot(page, f"{user}-released")
    row.get_by_role("button", name="Fetch").click()
    fetched = page.locator("#fetched_assignments_list .list_item", has_text=ASSIGNMENT)
    expect(fetched.get_by_role("button", name="Submit")).to_be_visible(timeout=30_000)
    notebook = home / ASSIGNMENT / "problem1.ipynb"
    answer_notebook(notebook, STUDENTS[user], "Because range(1, 1) is empty.")
    fetched.get_by_role("button", name="Submit").click()
    submitted = page.locator("#submitted_assignments_list .list_item", has_text=ASSIGNMENT)
    expect(submitted).to_be_visible(timeout=30_000)
    steps.shot(page, f"{user}-submitted")


def grade(page: Page, score: str) -> None:
    """The free-text answer's score, saved as nbgrader's page saves it (leaving the input)."""
    page.wait_for_function(GRADING_READY, timeout=60_000)
    field = page.locator("input.score#explain")
    field.fill(score)
    with page.expect_response(lambda r: r.request.method == "PUT"):
        field.press("Escape")
    # the page scrolls to the input it focused, animated: a screenshot waits for the end
    page.wait_for_function("() => !$('html, body').is(':animated')")


def student_of(page: Page) -> str:
    """Whose submission the grading page shows (its breadcrumb, names shown)."""
    return page.locator(".breadcrumb a.name-shown").inner_text().strip()


def test_a_course_from_upload_to_feedback_in_the_browser(
    demo: Hub, hub_page: Callable[..., BrowserPage], tmp_path: Path
) -> None:
    steps = Steps(tmp_path / "shots")
    course_url = demo.service_url("formgrader", f"{COURSE}/")
    instructor = hub_page(demo, "instructor")
    page = instructor.page

    # the roster from the hub's group; upload the source notebook of a new assignment,
    # generate, release
    page.goto(course_url)
    page.get_by_role("button", name=f"Import the hub group {COURSE}-students").click()
    for user in STUDENTS:
        expect(page.locator("#roster table.students")).to_contain_text(user)
    notebook = tmp_path / "problem1.ipynb"
    notebook.write_bytes(SAMPLE.read_bytes())
    form = page.locator("#new-assignment")
    form.get_by_label("Name").fill(ASSIGNMENT)
    form.locator("input[type=file]").set_input_files(notebook)
    form.get_by_role("button", name="Upload").click()
    row = page.locator(f"tr[data-assignment='{ASSIGNMENT}']")
    expect(row.locator("ul.sources a")).to_have_text("problem1.ipynb")
    steps.shot(page, "uploaded")
    for action in ("Generate", "Release"):
        run_on_course_page(page, action)
    steps.shot(page, "released")

    # the students, in their JupyterLab
    for user in STUDENTS:
        fetch_and_submit_in_lab(hub_page(demo, user), user, demo.workdir / "home" / user, steps)

    # collect, autograde all
    page.goto(course_url)
    for action in ("Collect", "Autograde all"):
        run_on_course_page(page, action)
    steps.shot(page, "autograded")
    page.goto(course_url + f"formgrader/manage_submissions/{ASSIGNMENT}")
    submissions = page.locator("#main-table")
    for user in STUDENTS:
        expect(submissions.locator("tr", has_text=user)).to_contain_text("needs manual grading")
    steps.shot(page, "submissions")

    # grade both with Next, come back with Prev: the score given is still there; the
    # submissions' list then says both are graded, with their total
    page.goto(course_url + f"formgrader/gradebook/{ASSIGNMENT}/problem1")
    page.locator("#main-table a", has_text="Submission #1").click()
    first = student_of(page)
    grade(page, MANUAL[first])
    steps.shot(page, "graded-first", full_page=False)
    first_url = page.url
    page.locator("li.next a").click()
    page.wait_for_url(lambda url: submission_of(url) not in ("", submission_of(first_url)))
    page.wait_for_function(GRADING_READY, timeout=60_000)
    second = student_of(page)
    assert {first, second} == set(STUDENTS)
    grade(page, MANUAL[second])
    steps.shot(page, "graded-second", full_page=False)
    page.locator("li.previous a").click()
    page.wait_for_url(lambda url: submission_of(url) == submission_of(first_url))
    page.wait_for_function(GRADING_READY, timeout=60_000)
    assert student_of(page) == first
    expect(page.locator("input.score#explain")).to_have_value(MANUAL[first])
    page.goto(course_url + f"formgrader/manage_submissions/{ASSIGNMENT}")
    for user in STUDENTS:
        row = submissions.locator("tr", has_text=user)
        expect(row).to_contain_text("graded")
        expect(row).not_to_contain_text("needs")
        expect(row).to_contain_text(TOTAL[user])
    steps.shot(page, "graded")

    # feedback
    page.goto(course_url)
    for action in ("Generate feedback", "Release feedback"):
        run_on_course_page(page, action)
    steps.shot(page, "feedback-released")
    assert instructor.problems == [], instructor.problems

    # student1 reads it on the formgrader's student page
    student = hub_page(demo, "student1").page
    student.goto(demo.service_url("formgrader"))
    grades = student.locator(f"section.grades[data-course='{COURSE}']")
    score = grades.locator(f"tr[data-assignment='{ASSIGNMENT}'] td.score")
    expect(score).to_have_text(TOTAL["student1"])
    feedback = student.frame_locator(f"iframe[title='Feedback on {ASSIGNMENT} / problem1']")
    expect(feedback.locator("body")).to_contain_text("Score: 3.0 / 3.0")
    student.locator("iframe.feedback").scroll_into_view_if_needed()
    steps.shot(student, "student-feedback")
