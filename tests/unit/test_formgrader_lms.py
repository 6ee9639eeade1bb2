"""LMS exports: the column layouts Canvas and Moodle document for their grade imports, logins
mapped per course, and no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from hubservices.common.csvsafe import neutralize
from hubservices.formgrader.app import FormGrader
from hubservices.formgrader.lms import (
    GradeTable,
    LmsSettings,
    canvas_csv,
    moodle_csv,
    parse_lms,
    read_pairs,
)

TABLE = GradeTable(
    assignments=[("ps1", 3.0), ("ps2", 10.0)],
    students=[("student1", "Lovelace, Ada"), ("=cmd|' /C calc'!A0", "@SUM(1+1)")],
    scores={
        ("student1", "ps1"): 2.0,
        ("student1", "ps2"): 9.5,
        ("=cmd|' /C calc'!A0", "ps1"): 0.0,
        ("=cmd|' /C calc'!A0", "ps2"): 0.0,
    },
)


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_canvas_layout() -> None:
    """Canvas's gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, then one
    column per assignment; the Points Possible row under the header, as Canvas exports it."""
    header, points, ada, attacker = rows(canvas_csv(TABLE, LmsSettings({"student1": "ada1"})))
    assert header == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "ps1", "ps2"]
    assert points == ["Points Possible", "", "", "", "", "3", "10"]
    assert ada == ["Lovelace, Ada", "", "", "ada1", "", "2", "9.5"]
    # the login in the configured id column; formulas neutralized
    assert attacker[:4] == ["'@SUM(1+1)", "", "", "'=cmd|' /C calc'!A0"]
    by_id = rows(canvas_csv(TABLE, LmsSettings({"student1": "42"}, canvas_column="SIS User ID")))
    assert by_id[2][:4] == ["Lovelace, Ada", "", "42", ""]


def test_moodle_layout() -> None:
    """Moodle's CSV import: a user column to map from (named as Moodle's export names it), then
    a column per grade item."""
    settings = LmsSettings({"student1": "ada@uni.example"}, moodle_column="Email address")
    header, ada, attacker = rows(moodle_csv(TABLE, settings))
    assert header == ["Email address", "First name", "Last name", "ps1", "ps2"]
    assert ada == ["ada@uni.example", "Ada", "Lovelace", "2", "9.5"]
    assert attacker == ["'=cmd|' /C calc'!A0", "'@SUM(1+1)", "", "0", "0"]
    assert rows(moodle_csv(TABLE, LmsSettings()))[1][0] == "student1"  # unmapped: the hub name


def test_no_cell_starts_a_formula() -> None:
    for export in (canvas_csv, moodle_csv):
        for row in rows(export(TABLE, LmsSettings())):
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert neutralize("-2+3") == "'-2+3" and neutralize("Ada") == "Ada"


def test_pairs_file(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("hub_name,lms_login\nstudent1, s1@uni.example\n\nstudent2,s2\n")
    assert read_pairs(pairs) == {"student1": "s1@uni.example", "student2": "s2"}
    settings = parse_lms({"c1": {"logins": str(pairs), "moodle_column": "Email address"}})
    assert settings["c1"].login("student1") == "s1@uni.example"
    pairs.write_text("student1,s1\n")
    with pytest.raises(ValueError, match="first line must be hub_name,lms_login"):
        read_pairs(pairs)
    pairs.write_text("hub_name,lms_login\nstudent1\n")
    with pytest.raises(ValueError, match="line 2"):
        read_pairs(pairs)
    with pytest.raises(ValueError, match="cannot read"):
        read_pairs(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"c1": {"canvas_column": "Email"}}, "canvas_column"),
        ({"c1": {"moodle_column": "userid"}}, "moodle_column"),
        ({"c1": {"logins": {"a": ""}}}, "logins"),
        ({"c1": {"login": {}}}, "unknown key"),
        ({"c1": []}, "a dict"),
    ],
)
def test_bad_settings_stop_the_service(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_lms(spec)
    app = FormGrader()
    with pytest.raises(Exception, match=f"lms: .*{message}"):
        app.lms = spec
