"""The integrity part of the hostile suite, autograded through the service on a Dask cluster.

The hub's formgrader sends every execution to a real ``dask scheduler`` with two ``dask worker``
processes (each in a directory of its own): a submission that writes the gradebook, reads
secrets and other students' files, connects out, forges result lines on fd 1 and 2 or leaves a
``setsid`` sleeper, next to honest ones in one batch. Nothing changes outside the sandbox, the
honest students get their right score on the right student, the batch runs on both workers,
and nothing is left on the workers.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.dask_cluster import DaskCluster, dask_cluster
from tests.harness.hub import Hub
from tests.integration.test_formgrader_hub import SAMPLE, Grader
from tests.integration.test_sandbox_hub import (
    HONEST_MARK,
    LIMITS,
    RIGHT,
    SOLUTION_MARK,
    WRONG,
    Listener,
    hostile_answers,
    sandbox_processes,
    submit,
)

pytestmark = pytest.mark.hub

#: The hostile submissions that go after integrity: grades, secrets, network, result channel,
#: leftover processes (exhausting resources is the same sandbox, tested with the local executor)
INTEGRITY = ("gradebook", "secrets", "network", "fds", "sleeper")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    with dask_cluster(tmp_path_factory.mktemp("daskcluster")) as started:
        yield started


@pytest.fixture(scope="module")
def dask_hub(tmp_path_factory: pytest.TempPathFactory, cluster: DaskCluster) -> Iterator[Hub]:
    work = tmp_path_factory.mktemp("daskhub")
    exchange = work / "exchange"
    exchange.mkdir(mode=0o777)
    courses = {
        name: {"root": str(work / "courses" / name), "exchange": str(exchange)}
        for name in ("course1", "course2")
    }
    config = work / "formgrader_config.py"
    config.write_text(
        f"c.FormGrader.courses = {json.dumps(courses)}\n"
        "c.FormGrader.max_workers = 2\n"
        f"c.FormGrader.sandbox = {LIMITS!r}\n"
        'c.FormGrader.executor = "dask"\n'
        f"c.FormGrader.dask = {{'scheduler_address': {cluster.address!r}}}\n"
    )
    hub = Hub(work, services=["formgrader"], service_args={"formgrader": [f"--config={config}"]})
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def worker_leftovers(cluster: DaskCluster) -> list[Path]:
    """Copies of submissions or scratch directories still in the workers' directories."""
    return [path for tmpdir in cluster.tmpdirs.values() for path in tmpdir.iterdir()]


def test_hostile_submissions_on_dask_next_to_honest_ones(
    dask_hub: Hub, cluster: DaskCluster
) -> None:
    teacher = Grader(dask_hub, "admin")
    root = dask_hub.workdir / "courses" / "course1"
    teacher.ok("PUT", "formgrader/api/assignment/ps1", {})
    shutil.copy(SAMPLE, root / "source" / "ps1" / "problem1.ipynb")
    teacher.ok("POST", "formgrader/api/assignment/ps1/assign")
    other_course = dask_hub.workdir / "courses" / "course2" / "source" / "ps1"
    other_course.mkdir(parents=True)
    (other_course / "solutions.txt").write_text(SOLUTION_MARK)
    gradebook = root / "gradebook.db"
    paths = {
        "gradebook": str(gradebook),
        "hub_cookie": str(dask_hub.workdir / "jupyterhub_cookie_secret"),
        "hub_db": str(dask_hub.workdir / "jupyterhub.sqlite"),
        "other_student": str(root / "submitted" / "honest1" / "ps1" / "problem1.ipynb"),
        "other_course": str(other_course / "solutions.txt"),
    }
    listener = Listener()
    try:
        hostile = {k: v for k, v in hostile_answers(paths, listener.port).items() if k in INTEGRITY}
        honest = {"honest1": RIGHT, "honest2": WRONG, "honest3": RIGHT, "honest4": WRONG}
        for student, code in {**hostile, **honest}.items():
            submit(root, student, code, f"\n# {HONEST_MARK}" if student == "honest1" else "")
        results: dict[str, Any] = {}
        grading = threading.Thread(
            target=lambda: results.update(
                teacher.send("POST", "api/assignment/ps1/autograde", timeout=600).json()
            )
        )
        grading.start()
        while grading.is_alive():  # the service keeps answering meanwhile
            assert teacher.get("api/jobs").status_code == 200
            time.sleep(1)
        grading.join()
    finally:
        listener.close()

    by_student = results["students"]
    assert set(by_student) == set(hostile) | set(honest)
    assert all(result["sandbox"] == "bubblewrap" for result in by_student.values())
    # the batch ran on both workers, and only on them
    ran_on = {w for result in by_student.values() for w in result["dask_workers"]}
    assert ran_on == set(cluster.worker_addresses().values())

    scores = {s["student"]: s["score"] for s in teacher.ok("GET", "formgrader/api/submissions/ps1")}
    assert {student: scores[student] for student in honest} == {
        "honest1": 2, "honest2": 0, "honest3": 2, "honest4": 0,
    }  # fmt: skip
    for student in honest:
        assert by_student[student]["success"], by_student[student]

    # only the service wrote the gradebook
    with sqlite3.connect(gradebook) as db:
        assert db.execute("SELECT count(*) FROM grade WHERE manual_score = 99").fetchone() == (0,)
    assert by_student["gradebook"]["success"] and scores["gradebook"] == 0

    # no secret, no other student's answer, no other course's source reached a notebook
    leaked = (root / "autograded" / "secrets" / "ps1" / "problem1.ipynb").read_text()
    cookie_secret = Path(paths["hub_cookie"]).read_bytes()
    for marker in (SOLUTION_MARK, HONEST_MARK, cookie_secret.hex()[:16], "JUPYTERHUB_API_TOKEN"):
        assert marker not in leaked
    assert "unreadable" in leaked

    assert listener.connections == 0 and scores["network"] == 0
    fds = (root / "autograded" / "fds" / "ps1" / "problem1.ipynb").read_text()
    assert "forged" in fds and scores["fds"] == 0

    # nothing left behind: no sandbox process (the sleeper included), no copy on a worker
    assert sandbox_processes() == []
    assert worker_leftovers(cluster) == []
