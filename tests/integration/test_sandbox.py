"""The autograde sandbox on this machine: bubblewrap, nbgrader, real kernels, no hub.

Honest submissions get exactly the scores ``nbgrader autograde`` gives them (the demo course and
the benchmark's course); a sandbox's process limit is its own; a sandbox dies whole; the wall
clock and a missing bubblewrap give the reasons a grader reads.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import psutil
import pytest

from hubservices.formgrader import sandbox as sandbox_module
from hubservices.formgrader import worker
from hubservices.formgrader.sandbox import Limits, Sandbox, python_paths
from tests.harness.autograde import (
    RIGHT,
    autograde_next_to_nbgrader,
    course_at,
    grades,
    make_course101,
)

pytestmark = pytest.mark.usefixtures("venv_on_path")


@pytest.mark.parametrize("which", ["course101", "benchmark"])
def test_honest_scores_are_nbgraders(tmp_path: Path, which: str) -> None:
    autograde_next_to_nbgrader(tmp_path, which)


#: The sandbox's uid in the tests that count its processes: not nobody's, whose processes may
#: be other sandboxes of the machine.
TEST_UID = 65532


def sandbox_uid_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real == TEST_UID]


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory the sandbox's uid owns, with the working directory in it."""
    work = tmp_path / "scratch" / "work"
    work.mkdir(parents=True)
    for path in (work.parent, work):
        os.chown(path, TEST_UID, TEST_UID)
    yield work.parent


def run_in(sandbox: Sandbox, scratch: Path, code: str) -> subprocess.Popen[bytes]:
    return sandbox.spawn(
        [sys.executable, "-c", code],
        str(scratch),
        str(scratch / "work"),
        env={"PATH": "/usr/bin:/bin"},
        output=subprocess.PIPE,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's uid differs from ours only as root")
def test_a_fork_bomb_starves_only_its_own_sandbox_and_dies_whole(
    scratch: Path, tmp_path: Path
) -> None:
    limits = Limits(memory=256 * 2**20, cpu_seconds=20, processes=24)
    sandbox = Sandbox(TEST_UID, TEST_UID, limits, tuple(python_paths()))
    bomb = run_in(
        sandbox,
        scratch,
        "import os, subprocess\n"
        "subprocess.Popen(['setsid', 'sleep', '3595'])\n"
        "while True:\n"
        "    try:\n        os.fork()\n    except OSError:\n        pass\n",
    )
    try:
        time.sleep(2)  # the bomb has taken every process its sandbox may have
        other_scratch = tmp_path / "other"
        (other_scratch / "work").mkdir(parents=True)
        for path in (other_scratch, other_scratch / "work"):
            os.chown(path, TEST_UID, TEST_UID)
        threads = run_in(
            sandbox,
            other_scratch,
            "import threading\n"
            "ts = [threading.Thread(target=lambda: None) for _ in range(12)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\nprint('ok', flush=True)",
        )
        out, _ = threads.communicate(timeout=60)
        assert threads.returncode == 0 and out.strip() == b"ok", out
        assert bomb.poll() is None and len(sandbox_uid_processes()) >= 20
    finally:
        os.killpg(bomb.pid, 9)
        bomb.wait()
    deadline = time.monotonic() + 10
    while sandbox_uid_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_uid_processes() == []  # the setsid sleeper too


def test_the_sandbox_sees_no_host_process_file_or_network(scratch: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o644)  # readable to anyone on the host: the sandbox still does not see it
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.5)
    uid = TEST_UID if os.geteuid() == 0 else os.geteuid()
    sandbox = Sandbox(
        uid, uid if os.geteuid() == 0 else os.getegid(), read_only=tuple(python_paths())
    )
    proc = run_in(
        sandbox,
        scratch,
        "import os, socket\n"
        f"print(os.path.exists({str(secret)!r}), sorted(int(p) for p in os.listdir('/proc')"
        " if p.isdigit())[:1], os.getuid())\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print('refused')\n",
    )
    out, _ = proc.communicate(timeout=60)
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()
    assert out.decode().split("\n")[:2] == [f"False [1] {uid}", "refused"]


def test_the_wall_clock_limit_stops_the_notebook_with_its_reason(tmp_path: Path) -> None:
    make_course101(tmp_path)
    (tmp_path / "submitted" / "sleeper").mkdir()
    nb = nbformat.read(tmp_path / "submitted" / "right" / "ps1" / "problem1.ipynb", 4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "squares":
            cell.source = "import time\ntime.sleep(120)\n" + RIGHT
    (tmp_path / "submitted" / "sleeper" / "ps1").mkdir()
    nbformat.write(nb, tmp_path / "submitted" / "sleeper" / "ps1" / "problem1.ipynb")
    course = course_at(tmp_path, "course101", wall_timeout=3)
    started = time.monotonic()
    result = worker.run(course, "autograde", ["ps1", "sleeper"])
    assert not result["success"]
    assert result["error"].startswith("the notebook ran longer than the wall-clock limit of 3s")
    assert (
        time.monotonic() - started < 60
    )  # not the 120 s of its sleep (nbgrader's cell timeout is 30)
    assert worker.run(course, "autograde", ["ps1", "right"])["success"]


def test_autograde_is_refused_without_bubblewrap_unless_the_admin_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_course101(tmp_path)
    bindir = tmp_path / "bin"  # a PATH with what the worker needs, but no bwrap
    bindir.mkdir()
    for tool in ("alembic", "prlimit"):
        found = shutil.which(tool)
        assert found
        (bindir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bindir))
    sandbox_module._check_bwrap.cache_clear()
    try:
        refused = worker.run(course_at(tmp_path, "course101"), "autograde", ["ps1", "right"])
        assert not refused["success"] and refused["sandbox"] == "unavailable"
        assert refused["error"].startswith("autograde refused: bubblewrap (bwrap) is not installed")
        assert "apt-get install bubblewrap" in refused["error"]
        assert "allow_unsandboxed_autograde = True" in refused["error"]
        assert not (tmp_path / "autograded").exists()

        allowed = course_at(tmp_path, "course101", allow_unsandboxed=True)
        result = worker.run(allowed, "autograde", ["ps1", "right"])
        assert result["success"] and result["sandbox"] == "none"
        assert grades(tmp_path, "course101", "ps1", ["right"])["right"][0] == 2
    finally:
        sandbox_module._check_bwrap.cache_clear()


def test_the_kernel_cannot_swap_its_sockets_for_links_to_host_sockets(tmp_path: Path) -> None:
    """We connect to the socket paths from outside: a symlink there would lead anywhere."""
    make_course101(tmp_path)
    folder = tmp_path / "submitted" / "swapper" / "ps1"
    folder.mkdir(parents=True)
    nb = nbformat.read(tmp_path / "submitted" / "right" / "ps1" / "problem1.ipynb", 4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "squares":
            cell.source = (
                "import glob, os\n"
                "for path in glob.glob('../kernel-ipc-*'):\n"
                "    os.unlink(path)\n"
                "    os.symlink('/run/host.sock', path)\n" + RIGHT
            )
    nbformat.write(nb, folder / "problem1.ipynb")
    course = course_at(tmp_path, "course101")
    result = worker.run(course, "autograde", ["ps1", "swapper"])
    assert result["success"], result.get("error")
    executed = (tmp_path / "autograded" / "swapper" / "ps1" / "problem1.ipynb").read_text()
    assert "PermissionError" in executed
    assert grades(tmp_path, "course101", "ps1", ["swapper"])["swapper"][0] == 0
