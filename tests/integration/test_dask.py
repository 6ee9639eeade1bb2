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
from tests.harness.autograde import (
    RIGHT,
    autograde_next_to_nbgrader,
    course_at,
    make_course101,
    submit_answer,
)
from tests.harness.dask_cluster import WORKER_SECRET, DaskCluster, dask_cluster

pytestmark = pytest.mark.usefixtures("venv_on_path")


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
    results = autograde_next_to_nbgrader(tmp_path, which, lambda course: on_dask(course, cluster))
    workers = set(cluster.worker_addresses().values())
    for result in results:  # one notebook each, run on a worker of the cluster
        assert len(result["dask_workers"]) == 1 and result["dask_workers"][0] in workers


def test_the_kernel_on_a_worker_sees_autogrades_variables_not_the_workers(
    tmp_path: Path, cluster: DaskCluster
) -> None:
    make_course101(tmp_path)
    show_env = "import os\nprint('ENV', os.environ.get('NBGRADER_EXECUTION'), sorted(os.environ))\n"
    submit_answer(tmp_path, "env", show_env + RIGHT)
    result = worker.run(
        on_dask(course_at(tmp_path, "course101"), cluster), "autograde", ["ps1", "env"]
    )
    assert result["success"], result.get("error")
    executed = (tmp_path / "autograded" / "env" / "ps1" / "problem1.ipynb").read_text()
    assert "ENV autograde" in executed and "PATH" in executed
    assert WORKER_SECRET not in executed


def test_a_worker_without_bubblewrap_refuses_unless_its_pod_can_be_the_sandbox(
    tmp_path: Path,
) -> None:
    make_course101(tmp_path / "course")
    bindir = tmp_path / "bin"  # what a worker needs, but no bwrap
    bindir.mkdir()
    prlimit = shutil.which("prlimit")
    assert prlimit
    (bindir / "prlimit").symlink_to(prlimit)
    options: dict[str, Any] = {"workers": 1, "worker_path": str(bindir), "nthreads": 2}
    with connected_cluster(tmp_path / "dask", **options) as no_bwrap:
        # the local executor's allow_unsandboxed_autograde does not reach the workers
        local_allowed = course_at(tmp_path / "course", "course101", allow_unsandboxed=True)
        refused = worker.run(on_dask(local_allowed, no_bwrap), "autograde", ["ps1", "right"])
        assert not refused["success"] and refused["sandbox"] == "unavailable"
        assert refused["error"].startswith("autograde refused on Dask worker tcp://127.0.0.1:")
        assert "bubblewrap (bwrap) is not installed" in refused["error"]

        # allowed, the pod is the sandbox: only for a worker running one submission at a time
        course = course_at(tmp_path / "course", "course101")
        allowed = on_dask(course, no_bwrap, allow_unsandboxed=True)
        shared = worker.run(allowed, "autograde", ["ps1", "right"])
        assert not shared["success"] and shared["sandbox"] == "unavailable"
        assert "must run one submission at a time (dask worker --nthreads 1" in shared["error"]
