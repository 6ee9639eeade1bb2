"""What a student sees of their own course work: submitted or not, when, late, released grades.

"Released" follows nbgrader's own feedback release: a submission's grade is released once
nbgrader's ``release_feedback`` has put the feedback of every notebook of that submission in the
exchange (``<exchange>/<course>/feedback/<notebook_hash(secret, notebook)>.html``, the file the
student's ``nbgrader fetch_feedback`` would fetch). The hash is keyed by the submission's secret, so
a new submission hides the old grade until feedback for the new one is released, and nothing shows
before the instructor releases it. The score shown is the gradebook's for that submission.

:func:`assignment_row` decides from plain values; :func:`student_grades` and
:func:`released_feedback` read the gradebook and the course's directories (in a gradebook thread).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.coursedir import CourseDirectory
from nbgrader.utils import notebook_hash, parse_utc

from .courses import Course, is_safe_id


@dataclass(frozen=True)
class Graded:
    """The gradebook's submission of one assignment by one student."""

    timestamp: datetime | None
    score: float
    max_score: float
    notebooks: tuple[str, ...]


@dataclass(frozen=True)
class AssignmentRow:
    """One assignment as its student sees it."""

    assignment: str
    duedate: datetime | None
    submitted: bool
    #: The latest submission's time (naive UTC), as nbgrader stamps it.
    submitted_at: datetime | None
    late: bool
    #: Whether the instructor released feedback (the grade) of the graded submission.
    released: bool
    score: float | None = None
    max_score: float | None = None
    #: Notebooks whose released feedback the student may read (only when released).
    feedback: tuple[str, ...] = field(default_factory=tuple)


def assignment_row(
    assignment: str,
    duedate: datetime | None,
    submission_times: Iterable[datetime],
    graded: Graded | None,
    released_notebooks: Iterable[str],
) -> AssignmentRow:
    """The row of one assignment: nothing of the grade unless every graded notebook's feedback
    is released."""
    times = sorted(t for t in submission_times if t is not None)
    if graded is not None and graded.timestamp is not None:
        times = sorted({*times, graded.timestamp})
    submitted_at = times[-1] if times else None
    released_set = set(released_notebooks)
    released = (
        graded is not None and bool(graded.notebooks) and released_set >= set(graded.notebooks)
    )
    return AssignmentRow(
        assignment=assignment,
        duedate=duedate,
        submitted=submitted_at is not None or graded is not None,
        submitted_at=submitted_at,
        late=bool(duedate and submitted_at and submitted_at > duedate),
        released=released,
        score=graded.score if released and graded else None,
        max_score=graded.max_score if released and graded else None,
        feedback=graded.notebooks if released and graded else (),
    )


def row_to_json(row: AssignmentRow) -> dict[str, object]:
    """A row for ``api/grades``: no grade fields at all until it is released."""
    data: dict[str, object] = {
        "assignment": row.assignment,
        "duedate": row.duedate,
        "submitted": row.submitted,
        "submitted_at": row.submitted_at,
        "late": row.late,
        "released": row.released,
    }
    if row.released:
        data.update(score=row.score, max_score=row.max_score, feedback=list(row.feedback))
    return data


# -- reading the course (in a gradebook thread) ---------------------------------------------


def _exchange_course(course: Course) -> Path:
    return course.exchange / course.id


def _inbound_times(course: Course, student: str, assignment: str) -> list[datetime]:
    """When ``student`` submitted ``assignment`` to the exchange (collected or not)."""
    inbound = _exchange_course(course) / "inbound"
    times = []
    for folder in inbound.glob(f"{student}+{assignment}+*"):
        stamp = folder / "timestamp.txt"
        # "+" is allowed in ids: only this student's and assignment's own folders count
        if folder.name.split("+")[:2] == [student, assignment] and stamp.is_file():
            try:
                times.append(parse_utc(stamp.read_text().strip()))
            except (ValueError, OverflowError):
                continue
    return times


def _secret(coursedir: CourseDirectory, student: str, assignment: str) -> str | None:
    """The graded submission's secret, which keys its released feedback in the exchange."""
    path = (
        Path(coursedir.format_path(coursedir.submitted_directory, student, assignment))
        / "submission_secret.txt"
    )
    return path.read_text() if path.is_file() else None


def released_feedback(
    course: Course, coursedir: CourseDirectory, student: str, assignment: str, notebook: str
) -> Path | None:
    """The released feedback file of ``student``'s graded ``notebook``, if released."""
    if not all(is_safe_id(i) for i in (student, assignment, notebook)):
        return None
    secret = _secret(coursedir, student, assignment)
    if not secret:
        return None
    digest = notebook_hash(secret=secret, notebook_id=notebook)
    path = _exchange_course(course) / "feedback" / f"{digest}.html"
    return path if path.is_file() else None


def _graded(gradebook: Gradebook, student: str, assignment: str) -> Graded | None:
    try:
        submission = gradebook.find_submission(assignment, student)
    except MissingEntry:
        return None
    return Graded(
        timestamp=submission.timestamp,
        score=submission.score,
        max_score=submission.max_score,
        notebooks=tuple(sorted(nb.name for nb in submission.notebooks)),
    )


def student_grades(
    course: Course, coursedir: CourseDirectory, gradebook: Gradebook, student: str
) -> list[AssignmentRow] | None:
    """``student``'s rows in ``course``, or None when the gradebook has no such student.

    Lists the assignments released to students (in the exchange's outbound) or submitted.
    """
    if not is_safe_id(student):
        return None
    try:
        gradebook.find_student(student)
    except MissingEntry:
        return None
    outbound = _exchange_course(course) / "outbound"
    rows = []
    for assignment in gradebook.assignments:
        times = _inbound_times(course, student, assignment.name)
        graded = _graded(gradebook, student, assignment.name)
        if not (times or graded or (outbound / assignment.name).is_dir()):
            continue  # not given to students yet
        notebooks = graded.notebooks if graded else ()
        released = [
            nb
            for nb in notebooks
            if released_feedback(course, coursedir, student, assignment.name, nb)
        ]
        rows.append(assignment_row(assignment.name, assignment.duedate, times, graded, released))
    return rows
