"""Graders at the same time on a PostgreSQL gradebook lose no grade and no comment; the job
history lives in PostgreSQL too."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from nbgrader.api import Gradebook
from sqlalchemy import create_engine, select

from hubservices.formgrader.models import Job
from tests.harness.formgrader import Grader, wait_batch
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

GRADERS = 6
STUDENTS = 12
CELLS = 4


@pytest.fixture
def pg_hub(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Hub, str]]:
    """A hub whose formgrader serves one course with its gradebook in PostgreSQL."""
    # nbgrader runs the `alembic` command when it creates a gradebook
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    with Gradebook(postgres_url, "pgcourse") as gb:
        gb.update_or_create_assignment("hw")
        gb.add_notebook("nb", "hw")
        for cell in range(CELLS):
            gb.add_grade_cell(f"q{cell}", "nb", "hw", max_score=10, cell_type="markdown")
            gb.add_solution_cell(f"q{cell}", "nb", "hw")
        for student in range(STUDENTS):
            gb.add_student(f"s{student}")
            gb.add_submission("hw", f"s{student}")
    exchange = tmp_path / "exchange"
    (exchange / "pgcourse" / "inbound").mkdir(parents=True)
    course = {
        "pgcourse": {
            "root": str(tmp_path / "pgcourse"),
            "db_url": postgres_url,
            "exchange": str(exchange),
        }
    }
    config = tmp_path / "formgrader_config.py"
    # the service's own records (job history) in the same database, next to nbgrader's tables
    config.write_text(
        f"c.FormGrader.courses = {json.dumps(course)}\nc.FormGrader.db_url = {postgres_url!r}\n"
    )
    graders = [f"grader{i}" for i in range(GRADERS)]
    hub = Hub(
        tmp_path / "hub",
        services=["formgrader"],
        service_args={"formgrader": [f"--config={config}"]},
        extra_config=f"c.JupyterHub.load_groups = {{'formgrade-pgcourse': {{'users': {graders}}}}}",
    )
    hub.start()
    try:
        yield hub, postgres_url
    finally:
        hub.stop()


def test_concurrent_graders_lose_nothing(pg_hub: tuple[Hub, str]) -> None:
    hub, url = pg_hub
    with Gradebook(url, "pgcourse") as gb:
        ids = [
            (grade.id, comment.id)
            for student in range(STUDENTS)
            for grade, comment in zip(
                gb.find_submission_notebook("nb", "hw", f"s{student}").grades,
                gb.find_submission_notebook("nb", "hw", f"s{student}").comments,
                strict=True,
            )
        ]
    graders = [Grader(hub, f"grader{i}", "pgcourse") for i in range(GRADERS)]

    def grade(index: int) -> None:
        grader = graders[index % GRADERS]
        grade_id, comment_id = ids[index]
        score = index % 10
        grader.ok("PUT", f"formgrader/api/grade/{grade_id}", {"manual_score": score})
        grader.ok("PUT", f"formgrader/api/comment/{comment_id}", {"manual_comment": f"c{index}"})
        # everyone also reads while the others write
        assert grader.ok("GET", "formgrader/api/submissions/hw")

    with ThreadPoolExecutor(GRADERS) as pool:
        list(pool.map(grade, range(len(ids))))

    with Gradebook(url, "pgcourse") as gb:
        for index, (grade_id, comment_id) in enumerate(ids):
            assert gb.find_grade_by_id(grade_id).manual_score == index % 10
            assert gb.find_comment_by_id(comment_id).manual_comment == f"c{index}"


def test_job_history_in_postgresql(pg_hub: tuple[Hub, str]) -> None:
    hub, url = pg_hub
    grader = Grader(hub, "grader0", "pgcourse")
    r = grader.send("POST", "api/assignment/hw/collect")
    assert r.status_code == 202, r.text
    batch = wait_batch(grader, r.json()["batch"])
    assert (batch["total"], batch["done"], batch["user"]) == (1, 1, "grader0"), batch["failures"]
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Job.action, Job.assignment, Job.state, Job.user).where(
                    Job.course == "pgcourse"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("collect", "hw", "done", "grader0")]
