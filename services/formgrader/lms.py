"""Grades in the CSV layouts that Canvas and Moodle import, with hub names mapped to LMS logins.

Canvas (Grades > Import) reads its own gradebook export's layout: ``Student``, ``ID``,
``SIS User ID``, ``SIS Login ID``, ``Section``, then one column per assignment, and an optional
``Points Possible`` row under the header; a student is matched by one of the id columns, and a
column whose name is no Canvas assignment creates one. Moodle (Grade administration > Import >
CSV file) takes any header row: the importer maps one column to a user field (``username``,
``useremail``, ``useridnumber``) and each grade column to a grade item (or a new one).

Which LMS login a hub user has is configured per course (``FormGrader.lms``): a column map
``{"hub name": "login"}`` or a CSV file of ``hub_name,lms_login`` pairs; unmapped names are
exported as they are. Scores follow ``nbgrader export``: the submission's score less its late
penalty, never below 0, and 0 without a submission. Every text cell is neutralized against
formulas (:func:`..common.csvsafe.neutralize`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbgrader.api import Gradebook, MissingEntry

from ..common.csvsafe import neutralize
from .export import exported_score

CANVAS_FIXED = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
#: Canvas columns that may carry the LMS login.
CANVAS_ID_COLUMNS = ("ID", "SIS User ID", "SIS Login ID")
#: Moodle's export names for the user fields its CSV import can map from, and the field each
#: maps to.
MOODLE_ID_COLUMNS = {
    "Username": "username",
    "Email address": "useremail",
    "ID number": "useridnumber",
}
PAIRS_HEADER = ("hub_name", "lms_login")


@dataclass(frozen=True)
class LmsSettings:
    """One course's LMS options."""

    logins: Mapping[str, str] = field(default_factory=dict)
    canvas_column: str = "SIS Login ID"
    moodle_column: str = "Username"

    def login(self, hub_name: str) -> str:
        return self.logins.get(hub_name, hub_name)


def parse_lms(raw: Mapping[str, Any]) -> dict[str, LmsSettings]:
    """``FormGrader.lms``: ``{course: {"logins": {...} or "/path/pairs.csv", "canvas_column":
    ..., "moodle_column": ...}}``; ValueError naming the course and what is wrong."""
    parsed = {}
    for course, spec in raw.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"course {course!r}: a dict of logins, canvas_column, moodle_column")
        unknown = set(spec) - {"logins", "canvas_column", "moodle_column"}
        if unknown:
            raise ValueError(f"course {course!r}: unknown key(s) {', '.join(sorted(unknown))}")
        logins = spec.get("logins", {})
        if isinstance(logins, str):
            logins = read_pairs(Path(logins))
        if not isinstance(logins, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in logins.items()
        ):
            raise ValueError(f"course {course!r}: logins must map hub names to logins")
        settings = LmsSettings(
            dict(logins),
            spec.get("canvas_column", "SIS Login ID"),
            spec.get("moodle_column", "Username"),
        )
        if settings.canvas_column not in CANVAS_ID_COLUMNS:
            raise ValueError(f"course {course!r}: canvas_column must be one of {CANVAS_ID_COLUMNS}")
        if settings.moodle_column not in MOODLE_ID_COLUMNS:
            raise ValueError(
                f"course {course!r}: moodle_column must be one of {tuple(MOODLE_ID_COLUMNS)}"
            )
        parsed[course] = settings
    return parsed


def read_pairs(path: Path) -> dict[str, str]:
    """A CSV of ``hub_name,lms_login`` rows (that header first); ValueError naming the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(c.strip() for c in rows[0]) != PAIRS_HEADER:
        raise ValueError(f"{path}: the first line must be {','.join(PAIRS_HEADER)}")
    pairs = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}, line {number}: expected hub_name,lms_login")
        pairs[row[0].strip()] = row[1].strip()
    return pairs


@dataclass(frozen=True)
class GradeTable:
    """Scores of a course's students in some of its assignments."""

    #: (assignment, max score), in order.
    assignments: list[tuple[str, float]]
    #: (hub name, "Last, First" or the hub name), in order.
    students: list[tuple[str, str]]
    scores: Mapping[tuple[str, str], float]  # (student, assignment) -> score


def _number(value: float) -> str:
    return f"{value:g}"


def _write(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def canvas_csv(table: GradeTable, settings: LmsSettings) -> str:
    """Canvas's gradebook import layout, the login in ``settings.canvas_column``."""
    login_at = CANVAS_FIXED.index(settings.canvas_column)
    rows = [
        [*CANVAS_FIXED, *(neutralize(a) for a, _ in table.assignments)],
        ["Points Possible", "", "", "", "", *(_number(m) for _, m in table.assignments)],
    ]
    for student, name in table.students:
        fixed = [neutralize(name), "", "", "", ""]
        fixed[login_at] = neutralize(settings.login(student))
        rows.append([*fixed, *(_number(table.scores[student, a]) for a, _ in table.assignments)])
    return _write(rows)


def moodle_csv(table: GradeTable, settings: LmsSettings) -> str:
    """A CSV for Moodle's grade import: the login column to map from, names, one column per
    assignment to map to a grade item."""
    rows = [
        [
            settings.moodle_column,
            "First name",
            "Last name",
            *(neutralize(a) for a, _ in table.assignments),
        ]
    ]
    for student, name in table.students:
        last, _, first = name.partition(", ") if ", " in name else ("", "", name)
        rows.append(
            [
                neutralize(settings.login(student)),
                neutralize(first),
                neutralize(last),
                *(_number(table.scores[student, a]) for a, _ in table.assignments),
            ]
        )
    return _write(rows)


EXPORTS = {"canvas": canvas_csv, "moodle": moodle_csv}


def grade_table(gradebook: Gradebook, assignment: str | None) -> GradeTable:
    """The gradebook's scores (one assignment, or all), scored as ``nbgrader export`` does."""
    assignments = [a for a in gradebook.assignments if assignment is None or a.name == assignment]
    students = []
    for student in sorted(gradebook.students, key=lambda s: s.id):
        if student.last_name and student.first_name:
            students.append((student.id, f"{student.last_name}, {student.first_name}"))
        else:
            students.append((student.id, student.first_name or student.last_name or student.id))
    scores = {}
    for a in assignments:
        for student_id, _ in students:
            try:
                submission = gradebook.find_submission(a.name, student_id)
            except MissingEntry:
                scores[student_id, a.name] = 0.0
            else:
                scores[student_id, a.name] = exported_score(submission)
    return GradeTable([(a.name, a.max_score) for a in assignments], students, scores)
