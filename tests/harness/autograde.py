"""Courses on disk for autograde tests: course101 and the benchmark's course, answers, nbgrader's
own autograde next to ours, and the gradebook's scores."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook

from bench.formgrader_bench import make_course
from hubservices.formgrader import worker
from hubservices.formgrader.courses import Course
from tests.harness.hub import ROOT

NBGRADER = str(Path(sys.executable).parent / "nbgrader")
COURSE101 = ROOT / "deploy" / "local" / "course101" / "source"
#: The right answer to course101's ps1 (and the benchmark course's): full marks.
RIGHT = "def squares(n):\n    return [i * i for i in range(1, n + 1)]"
#: course101 answers: right, wrong, wrong type, crashing, using a file of the submission
COURSE101_ANSWERS = {
    "right": RIGHT,
    "wrong": "def squares(n):\n    return []",
    "strings": "def squares(n):\n    return [str(i * i) for i in range(1, n + 1)]",
    "crash": "raise RuntimeError('no')\n" + RIGHT,
    "reads": "import json\nassert json.load(open('problem1.ipynb'))['cells']\n" + RIGHT,
}


def course_at(root: Path, course_id: str, **sandbox: object) -> Course:
    settings = {"memory_limit": 512 * 2**20, "cpu_limit": 30, "wall_timeout": 60, **sandbox}
    return Course(
        id=course_id,
        root=root,
        db_url=f"sqlite:///{root / 'gradebook.db'}",
        exchange=root / "exchange",
        nbgrader={"SandboxedExecute": settings},
    )


def nbgrader_cli(root: Path, course_id: str, *args: str) -> None:
    subprocess.run(
        [
            NBGRADER,
            *args,
            f"--CourseDirectory.root={root}",
            f"--CourseDirectory.course_id={course_id}",
        ],
        cwd=root,
        check=True,
        capture_output=True,
    )


def make_course101(root: Path) -> list[str]:
    """course101's ps1, generated, with one submission per answer."""
    shutil.copytree(COURSE101, root / "source")
    nbgrader_cli(root, "course101", "generate_assignment", "ps1")
    for student, code in COURSE101_ANSWERS.items():
        submit_answer(root, student, code)
    return list(COURSE101_ANSWERS)


def submit_answer(root: Path, student: str, code: str) -> None:
    """``student``'s submission of course101's released ps1 with ``code`` as the answer."""
    nb = nbformat.read(root / "release" / "ps1" / "problem1.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "squares":
            cell.source = code
    folder = root / "submitted" / student / "ps1"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "problem1.ipynb")


def grades(root: Path, course_id: str, assignment: str, students: list[str]) -> dict:
    """Every grade cell's auto score and every submission's total, per student."""
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", course_id) as gb:
        result = {}
        for student in students:
            submission = gb.find_submission(assignment, student)
            cells = {
                (nb.name, grade.name): grade.auto_score
                for nb in submission.notebooks
                for grade in nb.grades
            }
            result[student] = (submission.score, cells)
        return result


def autograde_next_to_nbgrader(
    tmp_path: Path, which: str, executor: Callable[[Course], Course] = lambda course: course
) -> list[dict]:
    """Autograde the course ``which`` with ``nbgrader autograde`` and, in a copy, with our
    worker on ``executor``'s course: the same scores in both. Our results, by student."""
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    if which == "course101":
        course_id, assignment = "course101", "ps1"
        students = make_course101(theirs)
    else:
        from bench.formgrader_bench import ASSIGNMENT, COURSE

        course_id, assignment = COURSE, ASSIGNMENT
        students = [f"s{i}" for i in range(5)]  # the fifth answer is wrong
        make_course(theirs, students)
    shutil.copytree(theirs, ours)

    nbgrader_cli(theirs, course_id, "autograde", assignment)
    course = executor(course_at(ours, course_id))
    results = []
    for student in students:
        result = worker.run(course, "autograde", [assignment, student])
        assert result["success"] and result["sandbox"] == "bubblewrap", result.get("error")
        results.append(result)

    expected = grades(theirs, course_id, assignment, students)
    assert grades(ours, course_id, assignment, students) == expected
    assert len({score for score, _ in expected.values()}) > 1  # right and wrong answers
    return results
