"""Courses at run time under a real hub: an admin adds a course in the page, names a grader, who
grades at once; graders name co-graders; all without restarting the hub or the service.

One hub of our own for the module (formgrader only, course1 from config); tests in file order.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.harness.formgrader import SAMPLE, Grader, formgrader_hub
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

HOME = "/services/formgrader/"


@pytest.fixture(scope="module")
def fg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = formgrader_hub(tmp_path_factory.mktemp("catalog"), {"course1": ["teacher1"]})
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def service_pid(hub: Hub) -> int:
    """The formgrader process the hub started (the same one all along: no restart)."""
    [proc] = [
        p
        for p in psutil.Process(hub.pid).children(recursive=True)
        if "hubservices.formgrader" in " ".join(p.cmdline())
    ]
    return proc.pid


def hub_group(hub: Hub, name: str) -> httpx.Response:
    return httpx.get(
        f"{hub.api_url}/groups/{name}", headers={"Authorization": f"token {hub.admin_token}"}
    )


def test_admin_adds_a_course_and_a_grader_in_the_page(fg: Hub, hub_page, tmp_path: Path) -> None:
    pid = service_pid(fg)
    for user in ("teacher3", "teacher4"):  # users the hub knows (they logged in once)
        fg.browser(user).get(HOME)
    browser = hub_page(fg, "admin")
    page = browser.page
    page.goto(f"{fg.url}{HOME}")
    browser.problems.clear()  # the hub's landing page is not ours
    config_row = page.locator("section.catalog tr[data-course=course1]")
    assert config_row.locator("td.source").inner_text() == "from config"
    page.fill("form.create input[name=id]", "physics")
    page.fill("form.create input[name=title]", "Physics <101>")
    page.click("form.create button[type=submit]")
    row = page.locator("section.catalog tr[data-course=physics]")
    row.wait_for()
    assert row.locator("td.source").inner_text() == "added by admin"
    assert row.locator("input[name=title]").input_value() == "Physics <101>"
    page.screenshot(path=str(fg.workdir / "catalog-admin.png"), full_page=True)
    assert hub_group(fg, "formgrade-physics").json()["users"] == []

    # the course is served at once; its graders page adds teacher3 to the hub group
    page.goto(f"{fg.url}{HOME}physics/")
    page.click("a[href$='/physics/graders']")
    page.fill("form.add input[name=user]", "teacher3")
    page.click("form.add button[type=submit]")
    page.locator("li[data-grader=teacher3]").wait_for()
    page.screenshot(path=str(fg.workdir / "catalog-graders.png"), full_page=True)
    assert hub_group(fg, "formgrade-physics").json()["users"] == ["teacher3"]
    assert browser.problems == [], browser.problems

    # teacher3 grades physics at once: creates, generates and lists an assignment
    teacher3 = Grader(fg, "teacher3", "physics")
    assert teacher3.get("formgrader/manage_assignments").status_code == 200
    teacher3.ok("PUT", "formgrader/api/assignment/hw1", {})
    source = fg.workdir / "data" / "courses" / "physics" / "source" / "hw1"
    shutil.copy(SAMPLE, source / "problem1.ipynb")
    teacher3.ok("POST", "formgrader/api/assignment/hw1/assign")
    assert [a["name"] for a in teacher3.ok("GET", "formgrader/api/assignments")] == ["hw1"]
    assert 'href="/services/formgrader/physics/"' in teacher3.client.get(HOME).text
    # ...but not course1
    assert Grader(fg, "teacher3", "course1").get("").status_code == 403

    # teacher3 names a co-grader, who grades, and takes them off again
    added = teacher3.send("POST", "api/graders", {"user": "teacher4"})
    assert added.status_code == 200, added.text
    assert added.json() == {"group": "formgrade-physics", "graders": ["teacher3", "teacher4"]}
    assert Grader(fg, "teacher4", "physics").get("formgrader/api/assignments").status_code == 200
    removed = teacher3.send("DELETE", "api/graders/teacher4")
    assert removed.json()["graders"] == ["teacher3"]
    assert hub_group(fg, "formgrade-physics").json()["users"] == ["teacher3"]
    assert service_pid(fg) == pid


def test_api_checks_ids_xsrf_and_who(fg: Hub) -> None:
    admin = Grader(fg, "admin", "course1")
    assert admin.client.get(HOME).status_code == 200

    def courses(method: str, path: str = "", body: object = None) -> httpx.Response:
        admin.base = HOME
        return admin.send(method, f"api/courses{path}", body)

    listing = {c["id"]: c for c in courses("GET").json()}
    assert listing["course1"]["source"] == "from config"
    assert listing["physics"]["title"] == "Physics <101>"
    # no XSRF token, cookie only: refused, nothing made
    forged = admin.client.post(HOME + "api/courses", json={"id": "forged", "title": "F"})
    assert forged.status_code == 403
    for body, status in [
        ({"id": "../etc", "title": "x"}, 400),
        ({"id": "api", "title": "x"}, 400),
        ({"id": "ok", "title": ""}, 400),
        ({"id": "course1", "title": "x"}, 409),
        ({"id": "physics", "title": "x"}, 409),
    ]:
        r = courses("POST", "", body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["message"]
    assert "forged" not in {c["id"] for c in courses("GET").json()}
    assert hub_group(fg, "formgrade-forged").status_code == 404

    created = courses("POST", "", {"id": "chem", "title": "Chemistry"})
    assert created.status_code == 201 and created.headers["Location"] == f"{HOME}chem/"
    assert courses("PATCH", "/chem", {"title": "Chemistry I"}).json()["title"] == "Chemistry I"
    assert courses("PATCH", "/course1", {"title": "x"}).status_code == 409
    assert courses("DELETE", "/course1").status_code == 409
    # a grader of chem: their pages work; retired, the course is gone at once
    teacher3 = Grader(fg, "teacher3", "chem")
    teacher3.base = f"{HOME}chem/"
    assert teacher3.get("").status_code == 403  # not chem's grader
    assert admin.client.get(f"{HOME}chem/").status_code == 200
    retired = courses("DELETE", "/chem")
    assert retired.status_code == 200 and retired.json()["retired"]
    assert admin.client.get(f"{HOME}chem/").status_code == 404
    assert courses("PATCH", "/chem", {"title": "back"}).status_code == 404
    assert courses("POST", "", {"id": "chem", "title": "again"}).status_code == 409

    # graders and students do not manage courses; a grader only their own course's graders
    teacher1 = Grader(fg, "teacher1", "course1")
    assert teacher1.client.get(HOME + "api/courses").status_code == 403
    teacher1.base = HOME
    assert teacher1.send("POST", "api/courses", {"id": "mine", "title": "M"}).status_code == 403
    teacher1.base = f"{HOME}physics/"
    assert teacher1.send("POST", "api/graders", {"user": "teacher1"}).status_code == 403
    student = Grader(fg, "student1", "physics")
    assert student.send("POST", "api/graders", {"user": "student1"}).status_code == 403
    # a name the hub does not know: the hub's answer, as a 400
    teacher3 = Grader(fg, "teacher3", "physics")
    unknown = teacher3.send("POST", "api/graders", {"user": "nobody-here"})
    assert unknown.status_code == 400 and "nobody-here" in unknown.json()["message"]
    assert hub_group(fg, "formgrade-physics").json()["users"] == ["teacher3"]


def test_courses_added_here_survive_a_restart(fg: Hub) -> None:
    fg.restart()
    teacher3 = Grader(fg, "teacher3", "physics")
    assert [a["name"] for a in teacher3.ok("GET", "formgrader/api/assignments")] == ["hw1"]
    admin = fg.browser("admin")
    assert admin.get(f"{HOME}chem/").status_code == 404  # retired stays retired
