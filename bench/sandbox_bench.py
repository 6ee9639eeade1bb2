"""What the autograde sandbox costs per submission, in a warm worker.

Two identical copies of the formgrader benchmark's course (``bench.formgrader_bench``: the
word-count notebook, ``--submissions`` students); one worker process (this one, nbgrader
imported once) autogrades each submission twice, alternating: with nbgrader's own ``Execute``
(the kernel a child of the worker, no sandbox) in one copy and with ``SandboxedExecute`` (the
kernel in bubblewrap, IPC sockets, scratch copy, limits) in the other. The difference of the
two times of the same submission is the sandbox's cost; its median is the figure.

Run from the project root: ``.venv/bin/python -m bench.sandbox_bench [--submissions 30]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.formgrader_bench import ASSIGNMENT, COURSE, make_course
from hubservices.formgrader import worker
from hubservices.formgrader.courses import Course


def course_at(root: Path) -> Course:
    return Course(COURSE, root, f"sqlite:///{root / 'gradebook.db'}", root / "exchange")


def unsandboxed(course: Course, student: str) -> dict:
    """nbgrader's autograde exactly as the worker ran it before the sandbox."""
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    config = worker.nbgrader_config(course)
    return NbGraderAPI(CourseDirectory(config=config), config=config).autograde(ASSIGNMENT, student)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=30)
    args = parser.parse_args()
    os.environ["PATH"] = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    students = [f"student{i:03d}" for i in range(args.submissions)]
    with tempfile.TemporaryDirectory() as work:
        plain, boxed = Path(work) / "plain", Path(work) / "sandboxed"
        make_course(plain, students)
        make_course(boxed, students)
        times: dict[str, list[float]] = {"plain": [], "sandboxed": []}
        unsandboxed(course_at(plain), students[0])  # warm both paths up (imports)
        worker.run(course_at(boxed), "autograde", [ASSIGNMENT, students[0]])
        for student in students:
            for name, run in (
                ("plain", lambda s: unsandboxed(course_at(plain), s)),
                ("sandboxed", lambda s: worker.run(course_at(boxed), "autograde", [ASSIGNMENT, s])),
            ):
                tic = time.perf_counter()
                result = run(student)
                times[name].append(time.perf_counter() - tic)
                assert result["success"], result.get("error")
    cost = [b - p for p, b in zip(times["plain"], times["sandboxed"], strict=True)]
    q = statistics.quantiles
    print(f"{args.submissions} submissions, one warm worker, alternating")
    print("| per submission | p50 | p90 |")
    print("|---|---:|---:|")
    for name, samples in (*times.items(), ("sandbox's cost (paired)", cost)):
        p50, p90 = statistics.median(samples), q(samples, n=10)[-1]
        print(f"| {name} | {p50 * 1000:.0f} ms | {p90 * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
