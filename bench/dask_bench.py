"""Autograde on Dask (two local workers) next to the local sandboxed executor.

Two identical copies of the formgrader benchmark's course (``bench.formgrader_bench``: the
word-count notebook, ``--submissions`` students). Each is autograded by two warm service
workers (two processes, nbgrader imported once each, as the service's ``max_workers=2`` runs
them), taking submission after submission: once with the local executor (the kernel in
bubblewrap on this machine), once with ``autograde_executor = "dask"`` against a real
``dask scheduler`` and two ``dask worker`` processes (one thread each) on this machine, which
run the same sandbox after receiving the notebook and its files. Both copies must end with the
same scores.

Run from the project root: ``.venv/bin/python -m bench.dask_bench [--submissions 30]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import add_output_options, docs_section, machine_busy, publish
from bench.formgrader_bench import ASSIGNMENT, COURSE, make_course
from hubservices.formgrader import dask_executor, worker
from hubservices.formgrader.courses import Course
from tests.harness.dask_cluster import dask_cluster

TITLE = "Formgrader on Dask"
#: Service workers (processes) autograding at once, as max_workers=2.
SERVICE_WORKERS = 2


def timed_autograde(course: Course, student: str) -> tuple[float, dict]:
    """One submission's autograde in this (warm) service worker, and how long it took."""
    tic = time.perf_counter()
    result = worker.run(course, "autograde", [ASSIGNMENT, student])
    return time.perf_counter() - tic, result


def batch(course: Course, students: list[str]) -> dict:
    """Every submission by SERVICE_WORKERS warm processes: wall time, per-submission times."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(SERVICE_WORKERS, mp_context=context) as pool:
        for _ in pool.map(timed_autograde, [course] * SERVICE_WORKERS, students):
            pass  # warm up: each process imports nbgrader (and connects to Dask) once
        busy, tic = machine_busy(), time.perf_counter()
        results = list(pool.map(timed_autograde, [course] * len(students), students))
        wall, busy = time.perf_counter() - tic, machine_busy() - busy
    for _, result in results:
        assert result["success"], result.get("error")
    return {
        "wall": wall,
        "times": [seconds for seconds, _ in results],
        "busy": busy / wall,
        "workers": {w for _, result in results for w in result.get("dask_workers", [])},
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def scores(root: Path, students: list[str]) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE) as gb:
        return {s: gb.find_submission(ASSIGNMENT, s).score for s in students}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="batches of each, alternating")
    add_output_options(parser, TITLE)
    args = parser.parse_args()
    os.environ["PATH"] = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    students = [f"student{i:03d}" for i in range(args.submissions)]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        roots = {name: Path(work) / name for name in ("local", "dask")}
        for root in roots.values():
            make_course(root, students)
        with dask_cluster(Path(work) / "cluster", workers=2) as cluster:
            courses = {
                name: Course(COURSE, root, f"sqlite:///{root / 'gradebook.db'}", Path(work))
                for name, root in roots.items()
            }
            courses["dask"] = dask_executor.with_executor(
                courses["dask"], "dask", {"scheduler_address": cluster.address}
            )
            runs: dict[str, list[dict]] = {"local": [], "dask": []}
            for round_ in range(args.rounds):  # alternating which goes first
                for name in ("local", "dask") if round_ % 2 == 0 else ("dask", "local"):
                    runs[name].append(batch(courses[name], students))
        assert scores(roots["local"], students) == scores(roots["dask"], students)
        assert all(len(run["workers"]) == 2 for run in runs["dask"])
    measured = {
        name: {
            "wall": statistics.median(run["wall"] for run in batches),
            "times": [t for run in batches for t in run["times"]],
            "busy": statistics.mean(run["busy"] for run in batches),
        }
        for name, batches in runs.items()
    }

    n = args.submissions
    rows = [
        f"| autograde of {n} submissions, 2 service workers, {args.rounds} rounds "
        "| local executor | Dask, 2 workers |",
        "|---|---:|---:|",
    ]
    for label, value in (
        ("wall time, median of the rounds", lambda m: f"{m['wall']:.1f} s"),
        ("per submission, p50", lambda m: ms(statistics.median(m["times"]))),
        ("per submission, p90", lambda m: ms(statistics.quantiles(m["times"], n=10)[-1])),
        ("machine CPU busy, cores of 2", lambda m: f"{m['busy']:.2f}"),
    ):
        rows.append(f"| {label} | {value(measured['local'])} | {value(measured['dask'])} |")
    body = [
        f"The benchmark course's {n} submissions (the formgrader section's notebook), each "
        "autograded by two warm service workers taking submission after submission: with the "
        "local executor (bubblewrap on this machine), and with "
        '`autograde_executor = "dask"` against a `dask scheduler` and two `dask worker` '
        "processes (one thread each) on the same machine, "
        "which receive each notebook with its files and run it in the same sandbox. Same scores "
        "in both; both Dask workers ran submissions.",
        "",
        *rows,
        "",
        f"Rounds alternate which executor goes first; the machine's load average was "
        f"{load:.1f} when the run started. Both executors use "
        "the same 2 cores here: Dask is for courses that need more machines than one.",
    ]
    report = "\n".join(rows)
    section = (
        docs_section(
            TITLE,
            body,
            f".venv/bin/python -m bench.dask_bench --submissions {n} --rounds {args.rounds}",
        )
        if args.write_docs
        else None
    )
    return publish(TITLE, report, section)


if __name__ == "__main__":
    sys.exit(main())
