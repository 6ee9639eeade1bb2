"""What a student is shown of an assignment: nothing of a grade until its feedback is released."""

from __future__ import annotations

from datetime import datetime

from hubservices.formgrader.studentgrades import Graded, assignment_row, row_to_json

DUE = datetime(2026, 12, 1, 12, 0)
BEFORE, AFTER = datetime(2026, 12, 1, 11, 0), datetime(2026, 12, 1, 13, 0)
GRADED = Graded(timestamp=BEFORE, score=2.5, max_score=3, notebooks=("p1", "p2"))


def test_not_submitted() -> None:
    row = assignment_row("ps1", DUE, [], None, [])
    assert (row.submitted, row.submitted_at, row.late, row.released) == (False, None, False, False)


def test_submitted_late_is_the_latest_submission() -> None:
    row = assignment_row("ps1", DUE, [BEFORE, AFTER], None, [])
    assert row.submitted and row.submitted_at == AFTER and row.late
    assert not assignment_row("ps1", None, [AFTER], None, []).late  # no due date, never late


def test_graded_but_not_released_shows_no_grade() -> None:
    row = assignment_row("ps1", DUE, [BEFORE], GRADED, [])
    assert not row.released and row.score is None and row.feedback == ()
    data = row_to_json(row)
    assert "score" not in data and "feedback" not in data and "max_score" not in data


def test_released_only_when_every_notebook_is() -> None:
    half = assignment_row("ps1", DUE, [BEFORE], GRADED, ["p1"])
    assert not half.released and half.score is None
    row = assignment_row("ps1", DUE, [BEFORE], GRADED, ["p1", "p2"])
    assert row.released and (row.score, row.max_score) == (2.5, 3)
    assert row.feedback == ("p1", "p2") and not row.late
    assert row_to_json(row)["score"] == 2.5


def test_a_graded_submission_without_notebooks_is_never_released() -> None:
    empty = Graded(timestamp=BEFORE, score=0, max_score=0, notebooks=())
    assert not assignment_row("ps1", DUE, [], empty, []).released
