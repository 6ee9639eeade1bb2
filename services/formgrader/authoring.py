"""What the course page decides about an assignment's source files and the student roster.

Instructors whose JupyterLab cannot see the course directory put an assignment's notebooks
under ``source/<assignment>/`` through the course page; the roster comes from a hub group or
a CSV. Pure functions over paths and text (the handlers do the I/O around them), so the rules
that keep uploads inside the course and names valid are tested on their own.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .courses import is_safe_id


class BadUpload(ValueError):
    """An upload or roster refused, with the message the instructor sees."""


@dataclass(frozen=True)
class SourceFile:
    name: str
    size: int


def source_dir(root: Path, assignment: str) -> Path:
    """``source/<assignment>`` of the course at ``root``; BadUpload for an invalid id."""
    if not is_safe_id(assignment):
        raise BadUpload(f"{assignment!r} is not a valid assignment id")
    return root / "source" / assignment


def source_assignments(root: Path) -> list[str]:
    """Assignments with a folder under ``source/`` (valid ids only)."""
    source = root / "source"
    if not source.is_dir():
        return []
    return sorted(p.name for p in source.iterdir() if p.is_dir() and is_safe_id(p.name))


def source_files(root: Path, assignment: str) -> list[SourceFile]:
    """The files directly in the assignment's source folder, by name (valid names only)."""
    folder = source_dir(root, assignment)
    if not folder.is_dir():
        return []
    return [
        SourceFile(p.name, p.stat().st_size)
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.is_symlink() and is_safe_id(p.name)
    ]


def source_file(root: Path, assignment: str, name: str) -> Path:
    """The path of one source file; BadUpload for a name that could leave the folder."""
    if not is_safe_id(name):
        raise BadUpload(
            f"{name!r} is not a valid file name (letters, digits and _.@+-, no leading dot)"
        )
    return source_dir(root, assignment) / name


def check_upload(name: str, body: bytes, limit: int) -> None:
    """BadUpload unless ``name`` is a plain file name and ``body`` within ``limit`` bytes."""
    if not is_safe_id(name):
        raise BadUpload(
            f"{name!r} is not a valid file name (letters, digits and _.@+-, no leading dot)"
        )
    if len(body) > limit:
        raise BadUpload(f"{name} is {len(body)} bytes; the limit is {limit}")


@dataclass(frozen=True)
class Student:
    id: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""


def roster_from_csv(text: str) -> list[Student]:
    """Students from a CSV with a header row: ``id`` (required), ``first_name``,
    ``last_name``, ``email``. BadUpload naming the line of the first bad row."""
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "id" not in [f.strip() for f in reader.fieldnames]:
        raise BadUpload("the CSV needs a header row with an 'id' column")
    students = []
    for row in reader:
        cells = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not is_safe_id(cells.get("id", "")):
            raise BadUpload(f"line {reader.line_num}: {cells.get('id', '')!r} is not a valid id")
        students.append(
            Student(
                cells["id"],
                cells.get("first_name", ""),
                cells.get("last_name", ""),
                cells.get("email", ""),
            )
        )
    return students


def roster_from_group(members: list[str]) -> list[Student]:
    """Students from a hub group's members: the hub name is all the hub knows of a person, so
    it is the last name too (nbgrader's pages show "last, first"; never "None, None")."""
    return [Student(name, last_name=name) for name in sorted(members) if is_safe_id(name)]
