"""Hostile submissions and what they must not reach: the answers, a hub with small sandbox
limits, the batch that autogrades them next to honest ones, and the integrity checks."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sqlite3
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import nbformat
import psutil

from tests.harness.autograde import RIGHT
from tests.harness.formgrader import SAMPLE, Grader, wait_batch
from tests.harness.hub import Hub

WRONG = "def squares(n):\n    return []"
#: Honest answers, graded in the same batch as the hostile ones.
HONEST = {"honest1": RIGHT, "honest2": WRONG, "honest3": RIGHT, "honest4": WRONG}
#: A string in course2's source (its solutions) that no student may read.
SOLUTION_MARK = "COURSE2-SOLUTION-7f3a"
#: A string in student "honest1"'s submission that no other student may read.
HONEST_MARK = "HONEST1-PRIVATE-91c2"
#: Marks a sleeper process of a hostile submission, to look for it afterwards.
SLEEPER_SECONDS = 3597
#: The sandbox's uid and gid here: not nobody's, so that other sandboxes on the machine (other
#: tests running at the same time) are not taken for leftovers of this one. Each hub of hostile
#: batches gets its own (the local executor's, the Dask executor's), as they may run at once.
SANDBOX_UID = 65531
DASK_SANDBOX_UID = 65530


def limits(uid: int) -> dict[str, int]:
    """Small sandbox limits, and the sandbox's uid and gid."""
    return {"sandbox_uid": uid, "sandbox_gid": uid, **LIMITS}


LIMITS = {
    "memory_limit": 256 * 2**20,
    "cpu_limit": 10,
    "process_limit": 64,
    "file_size_limit": 16 * 2**20,
    "wall_timeout": 30,
    "output_limit": 2**20,
}


def hostile_answers(paths: dict[str, str], port: int) -> dict[str, str]:
    """Student id -> answer cell; ``paths`` are the host files they go after."""
    read_all = (
        "import glob\n"
        f"for path in {sorted(paths.values())!r} + glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        print(path, open(path, 'rb').read()[:2000])\n"
        "    except Exception as e:\n"
        "        print(path, 'unreadable', e)\n"
    )
    return {
        "gradebook": (
            "import sqlite3\n"
            f"db = sqlite3.connect({paths['gradebook']!r})\n"
            "db.execute('UPDATE grade SET manual_score = 99')\n"
            "db.commit()\n" + RIGHT
        ),
        "secrets": read_all + WRONG,
        "network": (
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'escaped')\n"
            + RIGHT
        ),
        "fds": (
            "import os, subprocess\n"
            'os.write(1, b\'not json\\n{"success": true, "log": "forged"}\\n\')\n'
            'os.write(2, b\'not json\\n{"success": true, "log": "forged"}\\n\')\n'
            "subprocess.run(['echo', '{\"success\": true}'])\n" + WRONG
        ),
        "sleeper": (
            "import subprocess\n"
            f"subprocess.Popen(['setsid', 'sleep', '{SLEEPER_SECONDS}'])\n" + WRONG
        ),
        "forkbomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
        "        pass",
        "badoutput": "from IPython.display import publish_display_data\n"
        "publish_display_data({'text/html': 5})\n" + RIGHT,
        "memory": "hog = bytearray(8 * 2**30)\n" + RIGHT,
        "loop": "while True:\n    pass",
        "printer": "import sys\nfor _ in range(1024):\n    print('x' * 2**20)\n"
        "    sys.stdout.flush()\n" + RIGHT,
        "bigfile": (
            "with open('big', 'wb') as f:\n"
            "    for _ in range(2048):\n"
            "        f.write(b'x' * 2**20)\n" + RIGHT
        ),
    }


@contextlib.contextmanager
def sandbox_hub(work: Path, more_config: str = "", uid: int = SANDBOX_UID) -> Iterator[Hub]:
    """A hub whose formgrader has course1 and course2, two workers, small sandbox limits (as
    ``uid``) and ``more_config`` (lines of its config file); stopped at the end."""
    exchange = work / "exchange"
    exchange.mkdir(mode=0o777)
    courses: dict[str, dict[str, object]] = {
        name: {"root": str(work / "courses" / name), "exchange": str(exchange)}
        for name in ("course1", "course2")
    }
    courses["course1"]["nbgrader"] = {"ExecutePreprocessor": {"timeout": 5}}
    config = work / "formgrader_config.py"
    config.write_text(
        f"c.FormGrader.courses = {json.dumps(courses)}\n"
        "c.FormGrader.max_workers = 2\n"
        f"c.FormGrader.sandbox = {limits(uid)!r}\n" + more_config
    )
    hub = Hub(work, services=["formgrader"], service_args={"formgrader": [f"--config={config}"]})
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


class Listener:
    """A 127.0.0.1 port this test opened, noting every connection it gets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def submit(root: Path, student: str, code: str, extra: str = "") -> None:
    """Put ``student``'s answer where collect would have put it."""
    released = nbformat.read(root / "release" / "ps1" / "problem1.ipynb", as_version=4)
    for cell in released.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "squares":
            cell.source = code + extra
    folder = root / "submitted" / student / "ps1"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(released, folder / "problem1.ipynb")


def sandbox_processes(uid: int = SANDBOX_UID) -> list[psutil.Process]:
    """Processes of the sandbox's ``uid``, or sleeping as the hostile sleeper does as any uid
    but another test's sandbox."""
    sleeper = ["sleep", str(SLEEPER_SECONDS)]
    others = {SANDBOX_UID, DASK_SANDBOX_UID} - {uid}
    found = []
    for proc in psutil.process_iter(["uids", "cmdline"]):
        owner = proc.info["uids"].real if proc.info["uids"] else None
        if owner == uid or (proc.info["cmdline"] == sleeper and owner not in others):
            found.append(proc)
    return found


def scratch_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("hubservices-sandbox-*")}


def prepare_ps1(hub: Hub, teacher: Grader) -> tuple[Path, dict[str, str]]:
    """course1's ps1 assigned, course2 with a solution: course1's root, the host files a
    hostile submission goes after."""
    root = hub.workdir / "courses" / "course1"
    teacher.ok("PUT", "formgrader/api/assignment/ps1", {})
    shutil.copy(SAMPLE, root / "source" / "ps1" / "problem1.ipynb")
    teacher.ok("POST", "formgrader/api/assignment/ps1/assign")
    other_course = hub.workdir / "courses" / "course2" / "source" / "ps1"
    other_course.mkdir(parents=True)
    (other_course / "solutions.txt").write_text(SOLUTION_MARK)
    return root, {
        "gradebook": str(root / "gradebook.db"),
        "hub_cookie": str(hub.workdir / "jupyterhub_cookie_secret"),
        "service_cookie": str(hub.workdir / "data" / "formgrader_cookie_secret"),
        "hub_db": str(hub.workdir / "jupyterhub.sqlite"),
        "other_student": str(root / "submitted" / "honest1" / "ps1" / "problem1.ipynb"),
        "other_course": str(other_course / "solutions.txt"),
    }


def autograde_all_while_answering(teacher: Grader, answers: dict[str, str], root: Path) -> dict:
    """Submit ``answers`` (student -> code), then autograde them all as one batch, checking
    that the service keeps answering until it has finished; each student's job, as its
    result: success, error, isolation (``sandbox``) and the Dask workers it ran on."""
    for student, code in answers.items():
        submit(root, student, code, f"\n# {HONEST_MARK}" if student == "honest1" else "")
    r = teacher.send("POST", "api/assignment/ps1/autograde")
    assert r.status_code == 202, r.text
    queued = r.json()
    wait_batch(teacher, queued["batch"], timeout=600)  # polls: the service keeps answering
    results = {}
    for student, job_id in queued["students"].items():
        job = teacher.ok("GET", f"api/jobs/{job_id}")
        results[student] = {
            "success": job["state"] == "done",
            "error": job["error"] or "",
            "sandbox": job["isolation"],
            "dask_workers": job["ran_on"],
        }
    return results


def hostile_batch(
    hub: Hub, kinds: Collection[str] | None = None
) -> tuple[Path, dict[str, Any], dict[str, float]]:
    """The hostile answers (of ``kinds``, or all) next to the honest ones, autograded in one
    request, checked by :func:`assert_integrity`: course1's root, the results and the scores,
    by student."""
    teacher = Grader(hub, "admin")
    root, paths = prepare_ps1(hub, teacher)
    listener = Listener()
    try:
        hostile = {
            kind: code
            for kind, code in hostile_answers(paths, listener.port).items()
            if kinds is None or kind in kinds
        }
        gradebook_before = Path(paths["gradebook"]).stat().st_mtime_ns
        cookie_secret = Path(paths["hub_cookie"]).read_bytes()
        by_student = autograde_all_while_answering(teacher, {**hostile, **HONEST}, root)
    finally:
        listener.close()

    assert set(by_student) == set(hostile) | set(HONEST)
    assert all(result["sandbox"] == "bubblewrap" for result in by_student.values())
    assert Path(paths["gradebook"]).stat().st_mtime_ns > gradebook_before  # the service wrote
    return root, by_student, assert_integrity(teacher, root, by_student, listener, cookie_secret)


def assert_integrity(
    teacher: Grader,
    root: Path,
    by_student: dict[str, Any],
    listener: Listener,
    cookie_secret: bytes,
) -> dict[str, float]:
    """What the gradebook, secrets, network and fds submissions tried changed nothing, and
    the honest students got their right scores; every student's score."""
    scores = {s["student"]: s["score"] for s in teacher.ok("GET", "formgrader/api/submissions/ps1")}
    # honest students: right scores, on the right students, despite the forged result lines
    assert {student: scores[student] for student in HONEST} == {
        "honest1": 2, "honest2": 0, "honest3": 2, "honest4": 0,
    }  # fmt: skip
    for student in HONEST:
        assert by_student[student]["success"], by_student[student]

    # the gradebook: only the service wrote it (no grade of 99 anywhere)
    with sqlite3.connect(root / "gradebook.db") as db:
        assert db.execute("SELECT count(*) FROM grade WHERE manual_score = 99").fetchone() == (0,)
    assert by_student["gradebook"]["success"] and scores["gradebook"] == 0

    # nothing secret reached a notebook: the files were not there, /proc was the sandbox's
    leaked = notebook_text(root, "secrets")
    for marker in (SOLUTION_MARK, HONEST_MARK, cookie_secret.hex()[:16], "JUPYTERHUB_API_TOKEN"):
        assert marker not in leaked
    assert "unreadable" in leaked

    # no connection reached the test's port; the answer below it never ran
    assert listener.connections == 0
    assert scores["network"] == 0

    # what a student writes to fd 1/2 stays in their notebook
    assert "forged" in notebook_text(root, "fds") and scores["fds"] == 0
    return scores


def notebook_text(root: Path, student: str) -> str:
    """The autograded notebook of ``student``'s ps1, as text."""
    return (root / "autograded" / student / "ps1" / "problem1.ipynb").read_text()
