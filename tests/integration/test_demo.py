"""`make demo`'s hub config as written: its three services come up, and course101 goes from the
instructor to a student's JupyterLab and back through the exchange.

The harness loads ``deploy/local/jupyterhub_config.py`` and only swaps in free ports and paths.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness.formgrader import Grader, wait_batch
from tests.harness.hub import ROOT, Hub

pytestmark = pytest.mark.hub

DEMO_CONFIG = ROOT / "deploy" / "local" / "jupyterhub_config.py"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with Hub(
        tmp_path_factory.mktemp("demo"), recipe=f"load_subconfig({str(DEMO_CONFIG)!r})"
    ) as hub:
        yield hub


class StudentLab:
    """A student logged in to the hub, whose JupyterLab the hub started at login."""

    def __init__(self, hub: Hub, user: str) -> None:
        self.client = hub.browser(user)
        self.base = f"/user/{user}/"
        deadline = time.monotonic() + 60
        while True:  # the hub answers with its spawn-pending page until the server is up
            r = self.client.get(self.base + "lab")
            if r.status_code == 200 and r.url.path == self.base + "lab":
                break
            assert time.monotonic() < deadline, hub.log_tail()
            time.sleep(0.5)

    def assignments(self, action: str = "", **form: str) -> Any:
        """nbgrader's Assignments tab's calls: the list, or fetch/submit of one assignment."""
        xsrf = self.client.cookies.get("_xsrf", "", path=self.base)
        headers = {"X-XSRFToken": xsrf or ""}
        if action:
            r = self.client.post(
                f"{self.base}assignments/{action}", data=form, headers=headers, timeout=60
            )
        else:
            r = self.client.get(f"{self.base}assignments", params=form, headers=headers)
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["success"], result
        return result["value"]


def test_course101_from_instructor_to_student_and_back(demo: Hub) -> None:
    teacher = Grader(demo, "instructor", "course101")
    teacher.ok("POST", "formgrader/api/assignment/ps1/assign")
    teacher.ok("POST", "formgrader/api/assignment/ps1/release")

    lab = StudentLab(demo, "student1")
    released = lab.assignments(course_id="course101")
    assert [(a["assignment_id"], a["status"]) for a in released] == [("ps1", "released")]
    lab.assignments("fetch", course_id="course101", assignment_id="ps1")
    assert (demo.workdir / "home" / "student1" / "ps1" / "problem1.ipynb").is_file()
    after = lab.assignments("submit", course_id="course101", assignment_id="ps1")
    # under the student's hub name, though every demo server runs as the same OS user
    assert {a.get("student_id") for a in after if a["status"] == "submitted"} == {"student1"}

    teacher.ok("POST", "formgrader/api/assignment/ps1/collect")
    submissions = teacher.ok("GET", "formgrader/api/submissions/ps1")
    assert [s["student"] for s in submissions] == ["student1"]


def test_grading_is_the_services_not_the_students_servers(demo: Hub) -> None:
    lab = StudentLab(demo, "student2")
    assert lab.client.get(lab.base + "formgrader").status_code == 404
    page = lab.client.get(lab.base + "lab").text
    assert "@jupyter/nbgrader:formgrader" in page  # listed as disabled in Lab's page config
    assert "@jupyter/nbgrader:assignment-list" not in page


def test_every_service_page_answers_the_admin(demo: Hub) -> None:
    admin = demo.browser("admin")
    for name in ("cull", "stats", "formgrader"):
        r: httpx.Response = admin.get(demo.service_url(name))
        assert r.status_code == 200, (name, r.text[:300])


def test_student1_sees_ps1_grade_once_the_instructor_releases_it(demo: Hub) -> None:
    """After the cycle above: autograde, feedback, release; student1's page at each step."""
    teacher = Grader(demo, "instructor", "course101")
    student = demo.browser("student1")
    home = "/services/formgrader/"
    assert student.get(home).status_code == 200  # logs in to the service

    def ps1() -> dict[str, Any]:
        [row] = student.get(home + "api/grades").json()["course101"]
        return dict(row)

    for action in ("autograde", "generate_feedback"):
        r = teacher.send("POST", f"api/assignment/ps1/{action}")
        assert r.status_code == 202, r.text
        assert wait_batch(teacher, r.json()["batch"])["failures"] == []
    assert ps1()["submitted"] and not ps1()["released"] and "score" not in ps1()
    assert "not released yet" in student.get(home).text

    r = teacher.send("POST", "api/assignment/ps1/release_feedback")
    assert wait_batch(teacher, r.json()["batch"])["failures"] == []
    row = ps1()
    assert row["released"] and row["max_score"] == 3 and row["feedback"] == ["problem1"]
    page = student.get(home).text
    assert f"{row['score']:g} / 3" in page and 'src="/services/formgrader/api/feedback/' in page


def test_canvas_and_moodle_exports_of_course101(demo: Hub) -> None:
    """ps1 graded above: both LMS layouts, student1 under the demo's LMS login."""
    teacher = Grader(demo, "instructor", "course101")

    def rows(path: str) -> list[list[str]]:
        r = teacher.get(path)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv"), path
        return list(csv.reader(io.StringIO(r.text)))

    canvas = rows("export/canvas.csv")
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "ps1"]
    assert canvas[1] == ["Points Possible", "", "", "", "", "3"]
    [student1] = [row for row in canvas[2:] if row[3] == "student1@lms.example"]
    assert float(student1[5]) >= 0
    moodle = rows("export/moodle.csv")
    assert moodle[0] == ["Email address", "First name", "Last name", "ps1"]
    assert [row[3] for row in moodle[1:] if row[0] == "student1@lms.example"] == [student1[5]]
    assert rows("export/ps1/canvas.csv") == canvas
    assert teacher.get("export/nope/moodle.csv").status_code == 404
    assert (
        demo.browser("student1").get("/services/formgrader/course101/export/canvas.csv").status_code
        == 403
    )
