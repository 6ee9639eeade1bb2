"""What the trusted side accepts back from a Dask worker, and what travels to one."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from nbgrader.preprocessors import Execute, SaveAutoGrades
from traitlets.config import Config

from hubservices.formgrader import execute
from hubservices.formgrader.courses import Course
from hubservices.formgrader.dask_executor import (
    DaskExecute,
    RemoteExecutionFailed,
    UntrustedResult,
    check_dask_settings,
    merge_outputs,
    on_dask,
    pack_directory,
    pod_sandbox,
    unpack_files,
    with_executor,
)
from hubservices.formgrader.sandbox import Sandbox, SandboxUnavailable, drop_privileges
from tests.unit.test_app import run_service

LIMIT = 2**20


def graded_notebook() -> nbformat.NotebookNode:
    solution = {"solution": True, "grade": False, "grade_id": "answer", "locked": False}
    grade = {"grade": True, "grade_id": "test", "points": 2, "solution": False, "locked": True}
    return new_notebook(
        cells=[
            new_markdown_cell("# Problem"),
            new_code_cell("def squares(n):\n    return []", metadata={"nbgrader": solution}),
            new_code_cell("assert squares(2) == [1, 4]", metadata={"nbgrader": grade}),
        ]
    )


def executed(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` as nbclient would return it: outputs, counts, timings."""
    done = copy.deepcopy(nb)
    for count, cell in enumerate(done.cells):
        if cell.cell_type == "code":
            cell.execution_count = count
            cell.metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    done.cells[2].outputs = [
        new_output("error", ename="AssertionError", evalue="", traceback=["AssertionError"])
    ]
    return done


def test_only_outputs_and_counts_of_the_cells_sent_are_taken() -> None:
    sent = graded_notebook()
    merged = merge_outputs(sent, nbformat.writes(executed(sent)), LIMIT)
    assert merged.cells[2].outputs[0].ename == "AssertionError"
    assert merged.cells[2].execution_count == 2
    assert merged.cells[2].metadata == sent.cells[2].metadata  # timings dropped
    assert sent.cells[2].outputs == []  # the notebook sent is left as it was


@pytest.mark.parametrize(
    "tamper",
    [
        lambda nb: nb.cells[2].metadata.nbgrader.update(points=99),
        lambda nb: nb.cells[2].metadata.nbgrader.update(grade=False),
        lambda nb: setattr(nb.cells[2], "source", "pass"),
        lambda nb: nb.cells.append(new_code_cell("pass")),
        lambda nb: nb.cells.pop(0),
        lambda nb: setattr(nb.cells[1], "id", "other"),
        lambda nb: nb.cells[2].outputs.append({"output_type": "forged", "text": "ok"}),
    ],
    ids=["points", "grade-flag", "source", "added-cell", "removed-cell", "id", "bad-output"],
)
def test_a_notebook_that_came_back_changed_is_refused(tamper) -> None:
    sent = graded_notebook()
    returned = executed(sent)
    tamper(returned)
    with pytest.raises(UntrustedResult):
        merge_outputs(sent, json.dumps(returned), LIMIT)


@pytest.mark.parametrize("returned", [None, "not json", '{"cells": 3}', "x" * (LIMIT + 1)])
def test_what_is_no_notebook_or_too_big_is_refused(returned: str | None) -> None:
    with pytest.raises(UntrustedResult):
        merge_outputs(graded_notebook(), returned, LIMIT)


def test_only_the_submissions_regular_files_travel_within_the_cap(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "problem1.ipynb").write_text("{}")
    (tmp_path / "data" / "points.csv").write_text("1,2")
    secret = tmp_path.parent / "secret.txt"
    secret.write_text("host file")
    (tmp_path / "link").symlink_to(secret)
    files = pack_directory(tmp_path, 100)
    assert files == {"problem1.ipynb": b"{}", "data/points.csv": b"1,2"}
    with pytest.raises(RemoteExecutionFailed, match="max_files_size"):
        pack_directory(tmp_path, 4)

    unpacked = tmp_path.parent / "unpacked"
    unpack_files(files, unpacked)
    assert (unpacked / "data" / "points.csv").read_text() == "1,2"


@pytest.mark.parametrize("name", ["../escape", "/etc/cron.d/x", "a/../../b", ""])
def test_a_file_name_leaving_the_directory_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="refused"):
        unpack_files({name: b"x"}, tmp_path / "work")
    assert not (tmp_path.parent / "escape").exists()


def test_dask_takes_executes_place_and_nbgraders_grading_stays() -> None:
    preprocessors = on_dask(Config()).Autograde.autograde_preprocessors
    assert DaskExecute in preprocessors and Execute not in preprocessors
    assert preprocessors.index(DaskExecute) < preprocessors.index(SaveAutoGrades)


def test_the_workers_get_the_courses_limits_and_daskss_own_sandbox_setting() -> None:
    config = Config(
        {
            "SandboxedExecute": {"memory_limit": 2**28, "allow_unsandboxed": True},
            "ExecutePreprocessor": {"timeout": 5},
            "CourseDirectory": {"db_url": "postgresql://user:password@db/gradebook"},
        }
    )
    settings = DaskExecute(config=config).worker_settings()
    assert settings == {
        "SandboxedExecute": {"memory_limit": 2**28, "allow_unsandboxed": False},
        "ExecutePreprocessor": {"timeout": 5},
    }  # the local allow_unsandboxed_autograde does not apply; no gradebook URL travels


def test_dask_settings_are_checked_and_a_course_overrides_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key"):
        check_dask_settings({"scheduler_address": "tcp://s:8786", "adress": "x"})
    with pytest.raises(ValueError, match="scheduler_address"):
        check_dask_settings({})
    check_dask_settings({"scheduler_address": "tls://s:8786", "security": {}})

    course = Course("c", tmp_path, "sqlite://", tmp_path, nbgrader={"DaskExecute": {"a": 1}})
    on = with_executor(course, "dask", {"scheduler_address": "tcp://s:8786", "a": 0})
    assert on.nbgrader["DaskExecute"] == {"scheduler_address": "tcp://s:8786", "a": 1}
    assert with_executor(course, "local", {"scheduler_address": "tcp://s:8786"}) == course


def test_in_a_pod_student_code_still_runs_as_another_uid_than_the_worker() -> None:
    pod = pod_sandbox(Sandbox(65534, 65534), worker_threads=1)
    argv = pod.command(["python", "-m", "ipykernel_launcher"], "/tmp/s", "/tmp/s/work")
    assert argv[:3] == ["setpriv", "--reuid=65534", "--regid=65534"]
    assert "--no-new-privs" in argv and "bwrap" not in argv
    assert argv[argv.index("--") + 1] == "prlimit"
    with pytest.raises(SandboxUnavailable, match="--nthreads 1"):
        pod_sandbox(Sandbox(65534, 65534), worker_threads=4)


def processes_of(uid: int) -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a process as another uid")
def test_after_a_submission_in_a_pod_nothing_of_its_uid_is_left() -> None:
    uid = 61000 + os.getpid() % 1000  # a uid of this test alone: everything of it dies
    pod = pod_sandbox(Sandbox(uid, uid), worker_threads=1)
    leftover = Path(tempfile.gettempdir()) / f"hubservices-pod-test-{uid}"
    started = subprocess.run(
        [*drop_privileges(uid, uid), "sh", "-c", f"touch {leftover}; setsid sleep 3599 &"],
        check=True,
    )
    assert started.returncode == 0 and leftover.exists()
    assert processes_of(uid)
    pod.remove_everything_left()
    deadline = time.monotonic() + 10
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(uid) == []
    assert not leftover.exists()


def test_an_unreachable_scheduler_is_the_jobs_reason(tmp_path: Path) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    (tmp_path / "problem1.ipynb").write_text(nbformat.writes(graded_notebook()))
    executor = DaskExecute(scheduler_address=address, connect_timeout=1)
    with execute.reporting() as report, pytest.raises(RemoteExecutionFailed, match=address):
        executor.preprocess(graded_notebook(), {"metadata": {"path": str(tmp_path)}})
    assert report.problems[0].startswith(f"cannot reach the Dask scheduler at {address}")


@pytest.mark.parametrize(
    "dask, says",
    [({"scheduler_adress": "tcp://s:8786"}, "unknown key(s) scheduler_adress"), ({}, "needs")],
)
def test_bad_dask_settings_stop_the_service_with_one_line(
    tmp_path: Path, dask: dict, says: str
) -> None:
    config = tmp_path / "formgrader_config.py"
    config.write_text(f'c.FormGrader.autograde_executor = "dask"\nc.FormGrader.dask = {dask!r}\n')
    result = run_service("hubservices.formgrader", f"--config={config}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
