"""The Dask executor on a real cluster (a ``dask scheduler``, two ``dask worker``), no hub.

The test process is the service's worker: it runs nbgrader's autograde with DaskExecute, and
the notebooks execute in the bubblewrap sandbox of the Dask workers, from the files sent with
each task. Honest submissions get exactly the scores ``nbgrader autograde`` gives them, and a
batch spreads over both workers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubservices.formgrader import dask_executor, worker
from hubservices.formgrader.courses import Course

from bench.formgrader_bench import make_course
from tests.harness.dask_cluster import DaskCluster, dask_cluster
from tests.integration.test_sandbox import (  # noqa: F401 (venv_on_path: autouse fixture)
    course_at,
    grades,
    make_course101,
    nbgrader_cli,
    venv_on_path,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    with dask_cluster(tmp_path_factory.mktemp("dask")) as started:
        try:
            yield started
        finally:
            for client in dask_executor._clients.values():
                client.close()
            dask_executor._clients.clear()


def on_dask(course: Course, cluster: DaskCluster, **settings: object) -> Course:
    return dask_executor.with_executor(
        course, "dask", {"scheduler_address": cluster.address, **settings}
    )


@pytest.mark.parametrize("which", ["course101", "benchmark"])
def test_honest_scores_on_dask_are_nbgraders(
    tmp_path: Path, cluster: DaskCluster, which: str
) -> None:
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    if which == "course101":
        course_id, assignment = "course101", "ps1"
        students = make_course101(theirs)
    else:
        from bench.formgrader_bench import ASSIGNMENT, COURSE

        course_id, assignment = COURSE, ASSIGNMENT
        students = [f"s{i}" for i in range(6)]  # the fifth answer is wrong
        make_course(theirs, students)
    shutil.copytree(theirs, ours)

    nbgrader_cli(theirs, course_id, "autograde", assignment)
    course = on_dask(course_at(ours, course_id), cluster)
    ran_on = set()
    for student in students:
        result = worker.run(course, "autograde", [assignment, student])
        assert result["success"] and result["sandbox"] == "bubblewrap", result.get("error")
        ran_on.update(result["dask_workers"])

    expected = grades(theirs, course_id, assignment, students)
    assert grades(ours, course_id, assignment, students) == expected
    assert len({score for score, _ in expected.values()}) > 1  # right and wrong answers
    assert ran_on <= set(cluster.worker_addresses().values())
