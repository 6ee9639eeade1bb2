"""Hostile submissions autograded through the formgrader under a real hub, next to honest ones.

One autograde of every submission (two workers, small sandbox limits): each hostile answer
tries one way out of its sandbox (the gradebook, secrets, other submissions and courses, the
hub's processes, the network, the worker's result channel, leftover processes, exhausting
memory, CPU, processes, output or disk). Whatever it tries, nothing outside changes, the
honest students get their right score, on the right student, and nothing is left behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.hostile import (
    hostile_batch,
    notebook_text,
    sandbox_hub,
    sandbox_processes,
    scratch_dirs,
)
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def sbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with sandbox_hub(tmp_path_factory.mktemp("sandboxhub")) as hub:
        yield hub


def test_hostile_submissions_next_to_honest_ones(sbx: Hub) -> None:
    scratch_before = scratch_dirs()
    root, by_student, scores = hostile_batch(sbx)

    # limits: graded honestly (the cell fails, the rest is graded) or failed with the reason
    assert scores["memory"] == 0 and "MemoryError" in notebook_text(root, "memory")
    assert scores["bigfile"] == 0 and "File too large" in notebook_text(root, "bigfile")
    assert scores["loop"] == 0
    bad_output = by_student["badoutput"]
    assert not bad_output["success"] and "not valid in a notebook" in bad_output["error"]
    printer = by_student["printer"]
    assert not printer["success"] and "output limit" in printer["error"]
    forkbomb = by_student["forkbomb"]
    assert not forkbomb["success"] or scores["forkbomb"] == 0

    # nothing left behind: no process of the sandboxes, no scratch directory
    assert sandbox_processes() == []
    assert scratch_dirs() <= scratch_before  # none of this batch left (others may run)
