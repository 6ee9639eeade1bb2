"""The formgrader as tests drive it: a grader's logged-in client, and waiting for a batch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nbformat

from tests.harness.hub import ROOT, Hub

NBGRADER = str(Path(sys.executable).parent / "nbgrader")

#: The demo course's first notebook, the source most formgrader tests start from.
SAMPLE = ROOT / "deploy" / "local" / "course101" / "source" / "ps1" / "problem1.ipynb"
#: nbgrader's grading page has started (window load) and shown the submission's grades and
#: comments (a ``page.wait_for_function`` expression).
GRADING_READY = (
    "() => window.formgrader && formgrader.loaded && formgrader.grades.loaded"
    " && formgrader.comments.loaded && window.MathJax && MathJax.loaded"
)


def submission_of(url: str) -> str:
    """The submission a grading page URL shows (the page rewrites its ``?index=`` itself)."""
    found = re.search(r"/submissions/([0-9a-f]{32})/?(\?|$)", url)
    return found.group(1) if found else ""


class Grader:
    """A logged-in browser that sends the XSRF token the way nbgrader's JavaScript does."""

    def __init__(self, hub: Hub, user: str, course: str = "course1") -> None:
        self.client = hub.browser(user)
        self.base = f"/services/formgrader/{course}/"
        self.client.get(self.base)  # OAuth into the service; sets its _xsrf cookie

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(self.base + path, **kwargs)

    def send(
        self, method: str, path: str, body: Any = None, timeout: float = 120
    ) -> httpx.Response:
        xsrf = self.client.cookies.get("_xsrf", "", path="/services/formgrader/") or ""
        headers = {"X-CSRFToken": xsrf}
        return self.client.request(
            method, self.base + path, json=body, headers=headers, timeout=timeout
        )

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        r = self.send(method, path, body)
        assert r.status_code == 200, r.text
        result = r.json()
        if isinstance(result, dict) and "success" in result:
            assert result["success"], result
        return result


def formgrader_hub(work: Path, graders: dict[str, list[str]], more_config: str = "") -> Hub:
    """A hub (not started) serving only the formgrader, with one config course per key of
    ``graders`` (root ``work/courses/<course>``) whose hub group holds those users.

    ``hub.exchange`` is the exchange of every course; ``hub.course_root`` the first one's root.
    """
    exchange = work / "exchange"
    exchange.mkdir(mode=0o777)
    courses = {name: {"root": str(work / "courses" / name)} for name in graders}
    config = work / "formgrader_config.py"
    config.write_text(
        f"c.FormGrader.courses = {json.dumps(courses)}\n"
        f"c.FormGrader.exchange = {str(exchange)!r}\n{more_config}"
    )
    groups = {f"formgrade-{course}": {"users": users} for course, users in graders.items()}
    hub = Hub(
        work,
        services=["formgrader"],
        service_args={"formgrader": [f"--config={config}"]},
        extra_config=f"c.JupyterHub.load_groups = {groups!r}\n",
    )
    hub.exchange = exchange  # type: ignore[attr-defined]
    hub.course_root = work / "courses" / next(iter(graders))  # type: ignore[attr-defined]
    return hub


def wait_batch(grader: Grader, batch_id: int, timeout: float = 180) -> dict[str, Any]:
    """The batch's progress once every job of it has finished."""
    deadline = time.monotonic() + timeout
    while True:
        batch = grader.ok("GET", f"api/batches/{batch_id}")
        if batch["finished"]:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.5)


def student_run(hub: Hub, student: str, *args: str, course: str = "course1") -> None:
    """Run an nbgrader student command as ``student``, with a home of their own, through the
    exchange the test put in ``hub.exchange``."""
    home = hub.workdir / "students" / student
    run_as_student(home, hub.exchange, course, student, *args)  # type: ignore[attr-defined]


def run_as_student(home: Path, exchange: Path, course: str, student: str, *args: str) -> None:
    """An nbgrader student command (``fetch_assignment ps1``...) run as ``student`` would in
    their own home, through the course's exchange."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "USER": student, "LOGNAME": student, "HOME": str(home)}
    subprocess.run(
        [
            NBGRADER,
            *args,
            f"--course={course}",
            f"--student={student}",
            f"--Exchange.root={exchange}",
            f"--Exchange.assignment_dir={home}",
        ],
        cwd=home,
        env=env,
        check=True,
        capture_output=True,
    )


def answer(hub: Hub, student: str, code: str, text: str) -> None:
    """``student``'s fetched ps1 with ``code`` and ``text`` as the answers."""
    answer_notebook(hub.workdir / "students" / student / "ps1" / "problem1.ipynb", code, text)


def answer_notebook(path: Path, code: str, text: str) -> None:
    """A fetched copy of the sample notebook (:data:`SAMPLE`) with ``code`` and ``text`` as
    the answers, as the student would type them."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id == "squares":
            cell.source = code
        elif grade_id == "explain":
            cell.source = text
    nbformat.write(nb, path)
