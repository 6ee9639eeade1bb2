"""Every control of nbgrader's formgrader pages, clicked in Chromium on nbgrader's own
formgrader and on ours, on two copies of the same course: what a user sees must be the same.

One hub runs both: ours (``/services/formgrader/course101/``) and nbgrader's, as nbgrader
documents it for JupyterHub (``/services/course101/``, see tests/harness/nbgrader_reference.py).
The same script drives each side in turn and records what an instructor sees after each click:
the dialog's title and message, the page's table, the URL reached, the grading page's status
line; then the gradebook each side wrote. Any difference fails the test unless it is listed in
``ON_PURPOSE`` with the reason. Screenshots of every step land in the test's temp directory.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nbgrader.api import Gradebook
from playwright.sync_api import Page, Route

from tests.harness import free_port
from tests.harness.chromium import BrowserPage
from tests.harness.formgrader import GRADING_READY, SAMPLE, run_as_student, submission_of
from tests.harness.hub import ROOT, Hub
from tests.harness.nbgrader_reference import reference_hub_config, write_reference_config

pytestmark = pytest.mark.hub

COURSE = "course101"
INSTRUCTOR = "instructor"
STUDENTS = {"student1": "Ada", "student2": "Ben"}

MATHJAX_CDN = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/"
MATHJAX = (ROOT / "node_modules" / "mathjax").resolve()
TIME = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?( ?[A-Z]{3}|Z)?"

#: Differences we made on purpose: (step, what differs) -> why. Anything else fails.
ON_PURPOSE: dict[tuple[str, str], str] = {
    ("assignment added", "table"): "ours makes source/<assignment> when it is added (where "
    "uploads go), so the new row shows its due date and status at once; nbgrader's shows them "
    "once the instructor has made that folder",
}
#: Differences that are bugs of ours, not yet fixed (issue 16): listed so that the rest of the
#: suite guards every other control meanwhile; the test fails when one of them is fixed, so
#: that it leaves this list.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@dataclass
class Side:
    """One formgrader and its own copy of the course."""

    name: str
    #: The path under which nbgrader's routes (``formgrader/...``) are.
    base: str
    root: Path
    exchange: Path
    screenshots: Path
    #: The hub's public URL (scheme, host and port).
    origin: str = ""
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    #: Students by the order of their submission's random id, nbgrader's grading order: the
    #: scenario grades "Submission #1", which is a different student on each side.
    labels: dict[str, str] = field(default_factory=dict)

    def normalise(self, text: str) -> str:
        """What differs between the sides for no reason a user would notice: paths, times."""
        text = text.replace(self.origin, "").replace(self.base, "<base>/")
        text = text.replace(str(self.root), "<root>").replace(str(self.exchange), "<exchange>")
        text = re.sub(TIME, "<t>", text)
        text = re.sub(r"[0-9a-f]{32}", "<id>", text)  # nbgrader's submission ids
        for student, label in self.labels.items():
            text = re.sub(rf"\b{student}\b", label, text)
        return re.sub(r"\s+", " ", text).strip()


def see(side: Side, page: Page, step: str, what: str, value: str) -> None:
    side.seen.append((step, what, side.normalise(value)))


def snapshot(side: Side, page: Page, step: str) -> None:
    page.screenshot(path=side.screenshots / f"{len(side.seen):02d}-{step}.png", full_page=True)


def table(side: Side, page: Page, step: str) -> None:
    """The page's main table, once its rows have loaded."""
    page.wait_for_function(
        "() => !document.querySelector('#main-table')?.innerText.includes('Loading')"
    )
    page.wait_for_load_state("networkidle")
    rows = [side.normalise(row) for row in page.locator("#main-table tr").all_inner_texts()]
    see(side, page, step, "table", " | ".join(sorted(rows)))  # as sorted by the user
    snapshot(side, page, step)


def dialog(side: Side, page: Page, step: str, timeout: float = 180_000) -> None:
    """The success or error dialog an action opens: title and message, then OK."""
    modal = page.locator(".modal.in")
    modal.wait_for(timeout=timeout)
    see(side, page, step, "dialog", modal.locator(".modal-title").inner_text())
    see(side, page, step, "message", modal.locator(".modal-body p").first.inner_text())
    snapshot(side, page, step)
    modal.locator(".modal-footer button").first.click()
    page.locator(".modal").wait_for(state="detached")


def act(side: Side, page: Page, step: str, selector: str) -> None:
    """Click an action's icon in the assignments table and read its dialog."""
    page.locator(selector).first.click()
    dialog(side, page, step)
    table(side, page, step + ", after")


def open_page(side: Side, page: Page, path: str) -> None:
    page.goto(side.origin + side.base + path)
    page.wait_for_load_state("networkidle")


def scenario(side: Side, page: Page, students: Callable[[Side, str], None]) -> None:
    """An instructor's term, click by click; ``students(side, command)`` runs the students'
    side of the exchange (fetch, submit, fetch_feedback) from the command line."""
    # manage assignments: add, edit, generate, release, unrelease, release
    open_page(side, page, "formgrader/manage_assignments")
    table(side, page, "assignments")
    page.get_by_role("link", name="Add new assignment...").click()
    add = page.locator("#add-assignment-modal")
    add.locator("input.name").fill("ps1")
    add.locator("input.duedate").fill("2026-12-24T17:00")
    add.locator("input.timezone").fill("UTC")
    add.locator("button.save").click()
    add.wait_for(state="detached")
    table(side, page, "assignment added")
    # the notebooks, as the instructor writes them in the course directory
    (side.root / "source" / "ps1").mkdir(exist_ok=True)
    shutil.copy(SAMPLE, side.root / "source" / "ps1" / "problem1.ipynb")

    page.locator("#main-table td.edit a").first.click()
    edit = page.locator("#edit-assignment-modal")
    edit.locator("input.modal-duedate").fill("2026-12-31T17:00")
    edit.locator("button.save").click()
    edit.wait_for(state="detached")
    table(side, page, "due date edited")

    act(side, page, "generate", "#main-table td.assign a")
    act(side, page, "release", "#main-table td.release a")
    act(side, page, "unrelease", "#main-table td.release a")
    act(side, page, "release again", "#main-table td.release a")
    for student in STUDENTS:
        students(side, student)
    act(side, page, "collect", "#main-table td.collect a")

    # manage submissions: autograde each
    open_page(side, page, "formgrader/manage_submissions/ps1")
    table(side, page, "submissions")
    for i, _ in enumerate(STUDENTS):
        page.locator("#main-table td.autograde a").nth(i).click()
        dialog(side, page, f"autograde {i + 1}")
    page.reload()
    table(side, page, "submissions autograded")
    side.labels = grading_order(side.root)

    # gradebook views, then the grading page
    open_page(side, page, "formgrader/gradebook")
    table(side, page, "gradebook")
    page.locator("#main-table a", has_text="ps1").first.click()
    table(side, page, "gradebook ps1")
    page.locator("#main-table a", has_text="problem1").first.click()
    table(side, page, "gradebook problem1")
    page.locator("#main-table a", has_text="Submission #1").first.click()
    grading(side, page)

    # feedback
    open_page(side, page, "formgrader/manage_assignments")
    act(side, page, "generate feedback", "#main-table td.generate-feedback a")
    act(side, page, "release feedback", "#main-table td.release-feedback a")

    # manage students: add, edit
    open_page(side, page, "formgrader/manage_students")
    table(side, page, "students")
    page.get_by_role("link", name="Add new student...").click()
    add = page.locator("#add-student-modal")
    add.locator("input.id").fill("student3")
    add.locator("input.first-name").fill("Cy")
    add.locator("input.last-name").fill("Doe")
    add.locator("input.email").fill("cy@example.org")
    add.locator("button.save").click()
    add.wait_for(state="detached")
    table(side, page, "student added")
    row = page.locator("#main-table tr", has_text="student3")
    row.locator("td.edit a").click()
    edit = page.locator("#edit-student-modal")
    edit.locator("input.modal-last-name").fill("Roe")
    edit.locator("button.save").click()
    edit.wait_for(state="detached")
    table(side, page, "student edited")


def grading(side: Side, page: Page) -> None:
    """Scores, extra credit, a comment, flag, next/prev by link and by key, the help."""
    page.wait_for_function(GRADING_READY, timeout=120_000)
    see(side, page, "grading", "url", page.url)
    see(side, page, "grading", "header", page.locator(".breadcrumb").inner_text())
    snapshot(side, page, "grading")
    # each saved (Escape defocuses, which saves) before the next: the page sends the whole
    # grade each time, and two saves in flight at once may land in either order, on both
    for selector, value in [
        ("input.score#explain", "1"),
        ("input.extra-credit#explain_extra_credit", "0.5"),
        ("textarea#explain-comment", "Clear, thank you."),
    ]:
        field_ = page.locator(selector)
        field_.fill(value)
        with page.expect_response(lambda r: r.request.method == "PUT"):
            field_.press("Escape")
    with page.expect_response(lambda r: r.url.endswith("/flag")) as flagged:
        page.locator("body").press("Control+Shift+F")  # flag; the page says so for a second
    answer = flagged.value
    see(side, page, "flag", "answer", f"{answer.status} {answer.json()}")
    snapshot(side, page, "graded")

    page.locator("a[href$='/next']").first.click()
    page.wait_for_function(GRADING_READY)
    next_url = page.url
    see(side, page, "next", "url", next_url)
    see(side, page, "next", "header", page.locator(".breadcrumb").inner_text())
    # the grader works in an input (the first comment box), then moves to the same input of
    # the previous submission; the input, not a point on the page: our header makes the page
    # taller, so the same point is elsewhere in the notebook
    page.locator("textarea#squares-comment").click()
    page.keyboard.press("Control+,")  # previous submission
    page.wait_for_url(lambda url: submission_of(url) not in ("", submission_of(next_url)))
    page.wait_for_function(GRADING_READY)
    see(side, page, "prev by key", "url", page.url)
    see(side, page, "prev by key", "score kept", page.locator("input.score#explain").input_value())
    see(side, page, "prev by key", "focus", page.evaluate("() => document.activeElement.id"))

    page.locator(".help").click()
    help_dialog = page.locator("#help-dialog")
    help_dialog.wait_for()
    see(side, page, "help", "dialog", help_dialog.inner_text())
    snapshot(side, page, "help")
    page.keyboard.press("Escape")


def grading_order(root: Path) -> dict[str, str]:
    """Each student's label by the order nbgrader grades their ps1 (by submission id)."""
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE) as gb:
        notebooks = gb.notebook_submissions("problem1", "ps1")
        ordered = sorted((nb.id, nb.student.id) for nb in notebooks)
    return {student: f"<graded {i + 1}>" for i, (_, student) in enumerate(ordered)}


def offline(route: Route) -> None:
    """No network, but nbgrader's MathJax from its CDN URL is served from our npm copy of the
    same version: nbgrader's grading page does not start without it (keyboard, flag...), and
    the reference must behave as it does for a grader who is online."""
    url = route.request.url.partition("?")[0]
    if url.startswith(MATHJAX_CDN):
        name = url.removeprefix(MATHJAX_CDN)
        file = MATHJAX / ("MathJax.js" if name == "latest.js" else name)
        if file.resolve().is_relative_to(MATHJAX) and file.is_file():
            route.fulfill(path=file)
            return
    route.abort("internetdisconnected")


def gradebook(root: Path) -> dict:
    """What each side stored, without ids and times."""
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE) as gb:
        return {
            "students": sorted((s.id, s.first_name, s.last_name, s.email) for s in gb.students),
            "assignments": [
                (a.name, str(a.duedate), [n.name for n in a.notebooks]) for a in gb.assignments
            ],
            "submissions": sorted(
                (
                    nb.student.id,
                    nb.flagged,
                    nb.score,
                    sorted(
                        (g.name, g.auto_score, g.manual_score, g.extra_credit) for g in nb.grades
                    ),
                    # an empty comment shows as none (nbgrader's page saves "" for an
                    # input it focused and left)
                    sorted((c.name, c.manual_comment or None) for c in nb.comments),
                )
                for assignment in gb.assignments
                for submission in assignment.submissions
                for nb in submission.notebooks
            ),
        }


@pytest.fixture
def sides(tmp_path: Path) -> Iterator[tuple[Hub, list[Side]]]:
    ours = Side(
        "ours",
        f"/services/formgrader/{COURSE}/",
        tmp_path / "ours" / COURSE,
        tmp_path / "ours" / "exchange",
        tmp_path / "screens-ours",
    )
    theirs = Side(
        "nbgrader",
        f"/services/{COURSE}/",
        tmp_path / "theirs" / COURSE,
        tmp_path / "theirs" / "exchange",
        tmp_path / "screens-nbgrader",
    )
    for side in (ours, theirs):
        (side.root / "source").mkdir(parents=True)
        side.exchange.mkdir(mode=0o777)
        side.screenshots.mkdir()
    write_reference_config(theirs.root.parent, COURSE, theirs.root, theirs.exchange)
    courses = {COURSE: {"root": str(ours.root), "exchange": str(ours.exchange)}}
    config = tmp_path / "formgrader_config.py"
    config.write_text(f"c.FormGrader.courses = {json.dumps(courses)}\n")
    hub = Hub(
        tmp_path / "hub",
        services=["formgrader"],
        service_args={"formgrader": [f"--config={config}"]},
        extra_config=reference_hub_config(COURSE, theirs.root.parent, [INSTRUCTOR], free_port()),
    )
    ours.origin = theirs.origin = hub.url
    with hub:
        yield hub, [theirs, ours]


def test_every_control_does_what_it_does_in_nbgraders_formgrader(
    sides: tuple[Hub, list[Side]], hub_page: Callable[..., BrowserPage]
) -> None:
    hub, both = sides

    def students(side: Side, student: str) -> None:
        home = side.root.parent / "students" / student
        run_as_student(home, side.exchange, COURSE, student, "fetch_assignment", "ps1")
        run_as_student(home, side.exchange, COURSE, student, "submit", "ps1")

    for side in both:
        browser = hub_page(hub, INSTRUCTOR)
        # offline, as CI is
        browser.page.context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), offline)
        scenario(side, browser.page, students)
        stored = json.loads(side.normalise(json.dumps(gradebook(side.root), default=str)))
        stored = {key: sorted(values) for key, values in stored.items()}
        side.seen.append(("end", "gradebook", json.dumps(stored)))
        # a missing favicon is not something a user sees
        errors = [p for p in browser.problems if not p.startswith("Failed to load resource")]
        side.seen.append(("end", "page errors", " | ".join(errors)))

    theirs, ours = both
    differences, fixed = [], []
    for mine, reference in zip(ours.seen, theirs.seen, strict=True):
        step, what, value = mine
        if (step, what) in KNOWN_BUGS and mine == reference:
            fixed.append(f"{step} / {what}: now as nbgrader's; remove it from KNOWN_BUGS")
        elif mine != reference and (step, what) not in {**ON_PURPOSE, **KNOWN_BUGS}:
            differences.append(f"{step} / {what}:\n  nbgrader: {reference[2]}\n  ours:     {value}")
    assert not differences + fixed, "\n".join(differences + fixed)
