"""The Dask executor on a real cluster (a ``dask scheduler``, two ``dask worker``), no hub.

The test process is the service's worker: it runs nbgrader's autograde with DaskExecute, and
the notebooks execute in the bubblewrap sandbox of the Dask workers, from the files sent with
each task. Honest submissions get exactly the scores ``nbgrader autograde`` gives them, and a
batch spreads over both workers.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def connected_cluster(workdir: Path, **options: Any) -> Iterator[DaskCluster]:
    """A cluster, and this process's clients to it closed before it stops."""
    with dask_cluster(workdir, **options) as started:
        try:
            yield started
        finally:
            for client in dask_executor._clients.values():
                client.close()
            dask_executor._clients.clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    with connected_cluster(tmp_path_factory.mktemp("dask")) as started:
        yield started


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


def test_a_worker_without_bubblewrap_refuses_unless_dask_allows_unsandboxed(
    tmp_path: Path,
) -> None:
    make_course101(tmp_path / "course")
    bindir = tmp_path / "bin"  # what a worker needs, but no bwrap
    bindir.mkdir()
    prlimit = shutil.which("prlimit")
    assert prlimit
    (bindir / "prlimit").symlink_to(prlimit)
    with connected_cluster(tmp_path / "dask", workers=1, worker_path=str(bindir)) as no_bwrap:
        # the local executor's allow_unsandboxed_autograde does not reach the workers
        local_allowed = course_at(tmp_path / "course", "course101", allow_unsandboxed=True)
        refused = worker.run(on_dask(local_allowed, no_bwrap), "autograde", ["ps1", "right"])
        assert not refused["success"] and refused["sandbox"] == "unavailable"
        assert refused["error"].startswith("autograde refused on Dask worker tcp://127.0.0.1:")
        assert "bubblewrap (bwrap) is not installed" in refused["error"]

        allowed = on_dask(
            course_at(tmp_path / "course", "course101"), no_bwrap, allow_unsandboxed=True
        )
        result = worker.run(allowed, "autograde", ["ps1", "right"])
        assert result["success"] and result["sandbox"] == "none", result["error"]
    assert grades(tmp_path / "course", "course101", "ps1", ["right"])["right"][0] == 2
