"""CSV cells a spreadsheet reads as text, never as a formula (OWASP, "CSV Injection").

Names in exports come from users (hub names, nbgrader student names, LMS logins): a cell such as
``=HYPERLINK(...)`` or ``+cmd|' /C calc'!A0`` would run when the file is opened in a spreadsheet.
"""

from __future__ import annotations

#: What makes a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralize_cell(value: str) -> str:
    """``value``, with a leading ``'`` if it would start a formula (shown as text)."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
