"""The grades CSV: nbgrader's export, written so that a spreadsheet cannot run its cells.

nbgrader's ``CsvExportPlugin`` joins the cells with commas as they come: a name with a comma
shifts the columns, and a student's name or id such as ``=HYPERLINK(...)`` runs as a formula
when the file is opened. This plugin exports the same columns and rows (nbgrader's rules: a
missing submission scores 0, the score is ``max(0, raw - late penalty)``) through
:func:`~hubservices.common.csvsafe.csv_text`, which quotes and neutralizes the cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbgrader.api import Gradebook, MissingEntry, SubmittedAssignment
from nbgrader.plugins.export import CsvExportPlugin

from ..common.csvsafe import csv_text

#: nbgrader's columns, in its order.
GRADE_FIELDS = (
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
)


def exported_score(submission: SubmittedAssignment) -> float:
    """A submission's score as ``nbgrader export`` gives it: less its late penalty, at least 0."""
    return float(max(0.0, submission.score - (submission.late_submission_penalty or 0.0)))


class SafeCsvExportPlugin(CsvExportPlugin):  # type: ignore[misc]  # nbgrader is untyped
    """``nbgrader export``'s CSV with the same options (``to``, ``assignment``, ``student``)."""

    def export(self, gradebook: Gradebook) -> None:
        text = csv_text(GRADE_FIELDS, self.rows(gradebook))
        Path(self.to or "grades.csv").write_text(text, encoding="utf-8", newline="")

    def rows(self, gradebook: Gradebook) -> Iterator[dict[str, Any]]:
        """One row per (assignment, student), as nbgrader's exporter makes them."""
        assignments = {str(a) for a in self.assignment}
        students = {str(s) for s in self.student}
        for assignment in gradebook.assignments:
            if assignments and assignment.name not in assignments:
                continue
            for student in gradebook.students:
                if students and student.id not in students:
                    continue
                row = {
                    "assignment": assignment.name,
                    "duedate": assignment.duedate,
                    "student_id": student.id,
                    "last_name": student.last_name,
                    "first_name": student.first_name,
                    "email": student.email,
                    "max_score": assignment.max_score,
                }
                try:
                    submission = gradebook.find_submission(assignment.name, student.id)
                except MissingEntry:
                    row |= {"timestamp": "", "raw_score": 0.0, "late_submission_penalty": 0.0}
                    row["score"] = 0.0
                else:
                    penalty = submission.late_submission_penalty
                    row["timestamp"] = submission.timestamp
                    row["raw_score"] = submission.score
                    row["late_submission_penalty"] = penalty
                    row["score"] = exported_score(submission)
                yield {key: "" if value is None else value for key, value in row.items()}
