"""The integrity part of the hostile suite, autograded through the service on a Dask cluster.

The hub's formgrader sends every execution to a real ``dask scheduler`` with two ``dask worker``
processes (each in a directory of its own): a submission that writes the gradebook, reads
secrets and other students' files, connects out, forges result lines on fd 1 and 2 or leaves a
``setsid`` sleeper, next to honest ones in one batch. Nothing changes outside the sandbox, the
honest students get their right score on the right student, the batch runs on both workers,
and nothing is left on the workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.dask_cluster import DaskCluster, dask_cluster
from tests.harness.hostile import (
    DASK_SANDBOX_UID,
    hostile_batch,
    sandbox_hub,
    sandbox_processes,
)
from tests.harness.hub import Hub

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
    dask = {"scheduler_address": cluster.address}
    more_config = f'c.FormGrader.autograde_executor = "dask"\nc.FormGrader.dask = {dask!r}\n'
    with sandbox_hub(tmp_path_factory.mktemp("daskhub"), more_config, DASK_SANDBOX_UID) as hub:
        yield hub


def worker_leftovers(cluster: DaskCluster) -> list[Path]:
    """Copies of submissions or scratch directories still in the workers' directories."""
    workers = [tmpdir for name, tmpdir in cluster.tmpdirs.items() if name.startswith("worker")]
    return [path for tmpdir in workers for path in tmpdir.glob("hubservices-*")]


def test_hostile_submissions_on_dask_next_to_honest_ones(
    dask_hub: Hub, cluster: DaskCluster
) -> None:
    _, by_student, _ = hostile_batch(dask_hub, INTEGRITY)
    # the batch ran on both workers, and only on them
    ran_on = {w for result in by_student.values() for w in result["dask_workers"]}
    assert ran_on == set(cluster.worker_addresses().values())

    # nothing left behind: no sandbox process (the sleeper included), no copy on a worker
    assert sandbox_processes(DASK_SANDBOX_UID) == []
    assert worker_leftovers(cluster) == []
