"""The instructors' pages in Chromium under a real hub with all three services: the shared header
and its links between services, MathJax served by the formgrader (the network closed), the
course page that runs a course.

One hub for the module; course101 (the demo's course) with one submission per answer of
tests/harness/autograde.py. Screenshots of every page go under the module's temp directory.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Page, Route, expect

from tests.harness.autograde import make_course101
from tests.harness.formgrader import GRADING_READY, SAMPLE, Grader, wait_batch
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

COURSE = "course101"
UPLOAD_LIMIT = 2**20


@pytest.fixture(scope="module")
def pages_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("pages")
    root = work / "courses" / COURSE
    root.mkdir(parents=True)
    make_course101(root)
    exchange = work / "exchange"
    exchange.mkdir(mode=0o777)
    config = work / "formgrader_config.py"
    courses = {COURSE: {"root": str(root), "exchange": str(exchange)}}
    config.write_text(
        f"c.FormGrader.courses = {json.dumps(courses)}\nc.FormGrader.max_workers = 2\n"
        f"c.FormGrader.upload_limit = {UPLOAD_LIMIT}\n"
    )
    groups = {
        "formgrade-course101": {"users": ["teacher"]},
        "course101-students": {"users": ["right", "wrong", "newcomer"]},
    }
    hub = Hub(
        work,
        service_args={"formgrader": [f"--config={config}"]},
        extra_config=f"c.JupyterHub.load_groups = {groups!r}\n",
    )
    hub.start()
    hub.course_root = root  # type: ignore[attr-defined]
    hub.exchange = exchange  # type: ignore[attr-defined]
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go (looked at by whoever changes a page)."""
    return tmp_path_factory.mktemp("screenshots")


def offline(page: Page) -> None:
    """Close the network: only the test's own hub (127.0.0.1) answers; anything else fails."""

    def only_local(route: Route) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    page.context.route("**/*", only_local)


def header_links(page: Page) -> dict[str, str]:
    bar = page.locator("header.hs-bar")
    expect(bar).to_be_visible()
    return {a.inner_text().strip(): a.get_attribute("href") or "" for a in bar.locator("a").all()}


def test_header_links_only_to_services_the_user_may_use(pages_hub: Hub, hub_page, shots) -> None:
    admin = hub_page(pages_hub, "admin").page
    for service, title in (("cull", "Idle culler"), ("stats", "Hub usage")):
        admin.goto(pages_hub.service_url(service))
        links = header_links(admin)
        assert links[title] == f"/services/{service}/"  # the brand
        assert {"Formgrader", "Hub"} <= set(links), links
        admin.screenshot(path=str(shots / f"{service}.png"), full_page=True)
    # the stats dashboard: no "points" wording; at 420 px nothing wider than the screen
    expect(admin.locator("#status")).to_contain_text("users with usage")
    expect(admin.locator("#status")).not_to_contain_text("points")
    admin.set_viewport_size({"width": 420, "height": 900})
    admin.wait_for_load_state("networkidle")
    assert admin.evaluate("document.documentElement.scrollWidth") <= 420
    admin.screenshot(path=str(shots / "stats-420.png"), full_page=True)
    admin.set_viewport_size({"width": 1280, "height": 900})
    admin.get_by_role("link", name="Formgrader").click()
    expect(admin).to_have_url(re.compile(r"/services/formgrader/$"))
    assert {"Idle culler", "Hub usage"} <= set(header_links(admin))

    # a grader of one course, not an admin: the formgrader only, no link to cull or stats
    teacher = hub_page(pages_hub, "teacher")
    page = teacher.page
    page.goto(pages_hub.service_url("formgrader", f"{COURSE}/"))
    teacher.problems.clear()  # the hub's landing page (the user's JupyterLab) is not ours
    links = header_links(page)
    assert "Idle culler" not in links and "Hub usage" not in links, links
    assert links["Courses"] == "/services/formgrader/"
    assert links[f"Course {COURSE}"] == f"/services/formgrader/{COURSE}/"
    page.screenshot(path=str(shots / "course.png"), full_page=True)

    # nbgrader's own pages carry the same header: back to the course page from each
    for path in ("manage_assignments", "gradebook", "manage_students", "manage_submissions/ps1"):
        page.goto(pages_hub.service_url("formgrader", f"{COURSE}/formgrader/{path}"))
        page.wait_for_load_state("networkidle")
        links = header_links(page)
        assert links[f"Course {COURSE}"] == f"/services/formgrader/{COURSE}/", path
        page.screenshot(path=str(shots / f"nbgrader-{path.replace('/', '-')}.png"))
    assert teacher.problems == [], teacher.problems

    # links that lead somewhere: instructions point at the course page, not at a terminal
    assert page.locator("a[href$='/terminals/1']").count() == 0
    note = page.locator("#collapseOne")
    expect(note.locator("a", has_text="course page")).to_have_attribute(
        "href", re.compile(rf"/services/formgrader/{COURSE}/$")
    )
    expect(note).not_to_contain_text("command line")
    # the assignment's name and preview icon open a read-only view of its notebooks
    page.goto(pages_hub.service_url("formgrader", f"{COURSE}/formgrader/manage_assignments"))
    page.locator("#main-table td a", has_text="ps1").click()
    expect(page).to_have_url(re.compile(rf"/{COURSE}/view/source/ps1/$"))
    page.go_back()
    page.locator("#main-table td.preview a").click()
    expect(page).to_have_url(re.compile(rf"/{COURSE}/view/release/ps1/$"))
    with page.expect_response(re.compile(r"problem1\.ipynb$")) as rendered:
        page.get_by_role("link", name="problem1.ipynb").click()
    assert rendered.value.headers["content-security-policy"].startswith("sandbox")
    expect(page.locator("body")).to_contain_text("squares(n)")
    page.screenshot(path=str(shots / "view-release.png"))
    # the view's sandbox CSP blocks everything nbconvert's CSS asks for but its inline styles
    # (on purpose); nothing else may go wrong
    unexpected = [p for p in teacher.problems if not p.startswith("Loading the font")]
    assert unexpected == [], unexpected
    teacher.problems.clear()
    page.go_back()

    page.get_by_role("link", name=f"Course {COURSE}").click()
    expect(page).to_have_url(re.compile(rf"/services/formgrader/{COURSE}/$"))

    # log out from an nbgrader page: the service's login and the hub's are gone
    page.goto(pages_hub.service_url("formgrader", f"{COURSE}/formgrader/manage_assignments"))
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/hub/(login|logout)"))
    page.goto(pages_hub.service_url("formgrader", f"{COURSE}/"))
    expect(page).to_have_url(re.compile(r"/hub/login"))


def test_tex_renders_offline_on_the_grading_page_and_in_feedback(
    pages_hub: Hub, hub_page, shots
) -> None:
    grader = Grader(pages_hub, "teacher", COURSE)
    for action in ("autograde", "generate_feedback"):
        queued = grader.send("POST", f"api/submission/ps1/right/{action}")
        assert queued.status_code == 202, queued.text
        assert wait_batch(grader, queued.json()["batch"])["done"] == 1
    notebooks = grader.ok("GET", "formgrader/api/submitted_notebooks/ps1/problem1")
    submission = next(nb for nb in notebooks if nb["student"] == "right")

    teacher = hub_page(pages_hub, "teacher")
    page = teacher.page
    offline(page)
    page.goto(
        pages_hub.service_url("formgrader", f"{COURSE}/formgrader/submissions/{submission['id']}/")
    )
    teacher.problems.clear()  # the hub's landing page (the user's JupyterLab) is not ours
    page.reload()
    math = page.locator(".text_cell_render .MathJax_CHTML")
    expect(math.first).to_be_visible(timeout=30_000)
    assert "\\dots" not in page.locator(".text_cell_render").first.inner_text()
    page.screenshot(path=str(shots / "grading-mathjax.png"))
    assert teacher.problems == [], teacher.problems

    # feedback as the student opens it: a file in their own server (on the hub's origin, served
    # by jupyter_server); MathJax comes from the formgrader, nothing from outside
    feedback = pages_hub.course_root / "feedback" / "right" / "ps1" / "problem1.html"  # type: ignore[attr-defined]
    html = feedback.read_text()
    assert "cdnjs" not in html and "/services/formgrader/mathjax/MathJax.js" in html
    mine = pages_hub.workdir / "home" / "right" / "feedback" / "ps1" / "problem1.html"
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_text(html)
    student = hub_page(pages_hub, "right")  # the hub starts their JupyterLab
    console: list[str] = []
    student.page.on("console", lambda m: console.append(m.text))
    offline(student.page)
    url = f"{pages_hub.url}/user/right/files/feedback/ps1/problem1.html"
    deadline = time.monotonic() + 90
    while (response := student.page.goto(url)) is None or response.status != 200:
        assert time.monotonic() < deadline, "the student's server did not serve the feedback"
        time.sleep(1)
    student.page.wait_for_load_state("networkidle")
    expect(student.page.locator(".MathJax_CHTML").first).to_be_visible(timeout=30_000)
    student.page.screenshot(path=str(shots / "feedback-mathjax.png"))
    assert "\\dots" not in student.page.inner_text("body"), console


def test_our_header_sits_above_nbgraders_grading_navbar(pages_hub: Hub, hub_page, shots) -> None:
    """nbgrader's grading page fixes its navbar (Prev, breadcrumb, Next) at the top: our header
    comes first, uncovered, the navbar right below it, and the navbar still sticks to the top
    once the grader scrolls down the notebook."""
    grader = Grader(pages_hub, "teacher", COURSE)
    queued = grader.send("POST", "api/submission/ps1/wrong/autograde")
    assert queued.status_code == 202, queued.text
    assert wait_batch(grader, queued.json()["batch"])["done"] == 1
    notebooks = grader.ok("GET", "formgrader/api/submitted_notebooks/ps1/problem1")
    submission = next(nb for nb in notebooks if nb["student"] == "wrong")

    page = hub_page(pages_hub, "teacher").page
    page.goto(
        pages_hub.service_url("formgrader", f"{COURSE}/formgrader/submissions/{submission['id']}/")
    )
    page.wait_for_function(GRADING_READY, timeout=60_000)
    # the page scrolls to the focused input itself, animated: once that is over
    page.wait_for_function("() => !$('html, body').is(':animated')")
    page.evaluate("window.scrollTo(0, 0)")

    def box(selector: str) -> dict[str, float]:
        found = page.locator(selector).first.bounding_box()
        assert found, selector
        return found

    def on_top(selector: str) -> bool:
        """Whether the element is what the browser shows at its own centre (not covered)."""
        return bool(
            page.locator(selector).first.evaluate(
                """el => { const r = el.getBoundingClientRect();
                           const top = document.elementFromPoint(r.x + r.width / 2,
                                                                 r.y + r.height / 2);
                           return el === top || el.contains(top); }"""
            )
        )

    header, navbar = box("header.hs-bar"), box("nav.navbar-fixed-top")
    assert header["y"] == 0 and on_top("header.hs-bar a.hs-brand")
    assert navbar["y"] == header["y"] + header["height"], (header, navbar)
    assert on_top("li.next a") and on_top("li.previous a")
    page.screenshot(path=str(shots / "grading-header.png"))
    page.mouse.wheel(0, 600)
    page.wait_for_function("() => window.scrollY > 100")
    assert box("nav.navbar-fixed-top")["y"] == 0 and on_top("li.next a")
    page.screenshot(path=str(shots / "grading-header-scrolled.png"))


def test_course_page_runs_the_course(pages_hub: Hub, hub_page, shots, tmp_path: Path) -> None:
    teacher = hub_page(pages_hub, "teacher")
    page = teacher.page
    page.goto(pages_hub.service_url("formgrader", f"{COURSE}/"))
    teacher.problems.clear()  # the hub's landing page (the user's JupyterLab) is not ours
    page.reload()

    # the roster before anyone submits: the hub group, then names from a CSV
    page.get_by_role("button", name="Import the hub group course101-students").click()
    roster = page.locator("#roster table.students")
    expect(roster).to_contain_text("newcomer")  # never submitted
    roster_csv = tmp_path / "roster.csv"
    roster_csv.write_text("id,first_name,last_name,email\nright,Rita,Right,rita@example.org\n")
    page.locator("#import-csv input[type=file]").set_input_files(roster_csv)
    page.get_by_role("button", name="Import CSV").click()
    expect(roster.locator("tr", has_text="rita@example.org")).to_contain_text("Right, Rita")
    page.goto(pages_hub.service_url("formgrader", f"{COURSE}/formgrader/manage_students"))
    expect(page.locator("#main-table")).to_contain_text("newcomer")
    page.goto(pages_hub.service_url("formgrader", f"{COURSE}/formgrader/manage_submissions/ps1"))
    submissions = page.locator("#main-table")
    expect(submissions.locator("tr", has_text="rita")).to_contain_text("Right, Rita")
    # (nbgrader prints a missing name, and a missing timestamp, as "None")
    expect(submissions.locator("tr", has_text="wrong").locator("td").first).to_have_text(
        re.compile(r"^wrong,\s*$")
    )
    page.screenshot(path=str(shots / "nbgrader-manage_submissions-names.png"))
    page.goto(pages_hub.service_url("formgrader", f"{COURSE}/"))

    # a new assignment from the browser: upload its notebook, generate, release
    notebook = tmp_path / "problem1.ipynb"
    notebook.write_bytes(SAMPLE.read_bytes())
    form = page.locator("#new-assignment")
    form.get_by_label("Name").fill("ps2")
    form.locator("input[type=file]").set_input_files(notebook)
    form.get_by_role("button", name="Upload").click()
    row = page.locator("tr[data-assignment='ps2']")
    expect(row.locator("ul.sources a")).to_have_text("problem1.ipynb")
    with page.expect_download() as download:
        row.locator("ul.sources a").click()
    assert Path(download.value.path()).read_bytes() == SAMPLE.read_bytes()

    for name in ("Generate", "Release"):
        row.get_by_role("button", name=name, exact=True).click()
        action = page.locator("td:nth-child(2)", has_text=re.compile(rf"^{name}$"))
        batch = page.locator("#batches tr").filter(has=action).first
        expect(batch).to_contain_text("1 of 1 done", timeout=90_000)
        expect(batch).to_contain_text("teacher")
        expect(batch.locator("td").nth(4)).to_have_text(re.compile(r"^\d+ (s|min)"))
    assert (pages_hub.exchange / COURSE / "outbound" / "ps2" / "problem1.ipynb").is_file()  # type: ignore[attr-defined]
    page.screenshot(path=str(shots / "course-page.png"), full_page=True)
    page.set_viewport_size({"width": 420, "height": 900})
    page.screenshot(path=str(shots / "course-page-420.png"), full_page=True)
    assert teacher.problems == [], teacher.problems

    # bad uploads: a clear 400, nothing written
    grader = Grader(pages_hub, "teacher", COURSE)
    xsrf = grader.client.cookies.get("_xsrf", "", path="/services/formgrader/") or ""
    for name, body, says in (
        (".hidden", b"x", "not a valid file name"),
        ("big.ipynb", b"x" * (UPLOAD_LIMIT + 1), "the limit is"),
    ):
        r = grader.client.post(
            grader.base + "api/assignment/ps2/source",
            files={"file": (name, body)},
            headers={"X-XSRFToken": xsrf},
        )
        assert r.status_code == 400 and says in r.json()["message"], r.text
    r = grader.client.post(
        grader.base + "api/assignment/ps2/source", files={"file": ("a.txt", b"x")}
    )
    assert r.status_code == 403  # no XSRF token
    source = pages_hub.course_root / "source" / "ps2"  # type: ignore[attr-defined]
    assert sorted(p.name for p in source.iterdir()) == ["problem1.ipynb"]
