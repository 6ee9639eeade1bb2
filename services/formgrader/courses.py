"""What the formgrader decides without a server: courses, who grades them, safe names, CSP.

Pure functions, so that the rules that keep one course's graders out of another course, keep
paths inside a course and keep student HTML from running script are unit-tested on their own.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy.engine import make_url

from ..common.csp import content_security_policy
from ..common.process import child_env

#: Course, assignment, notebook, student and grade ids that may appear in a URL and become a
#: path component or a glob in nbgrader: no separators, no leading dot ("..", ".ssh"), no glob.
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}")

_COURSE_KEYS = {"root", "db_url", "exchange", "timezone", "nbgrader"}


@dataclass(frozen=True)
class Course:
    """One course as the service's config file declares it."""

    id: str
    root: Path
    db_url: str
    exchange: Path
    timezone: str = "UTC"
    #: More nbgrader configuration, e.g. ``{"ExecutePreprocessor": {"timeout": 60}}``.
    nbgrader: Mapping[str, Any] = field(default_factory=dict)


def is_safe_id(value: str) -> bool:
    """Whether ``value`` can name a course, assignment, student or notebook on disk."""
    return bool(_SAFE_ID.fullmatch(value))


def path_pattern(value: str) -> str:
    """A regex for ``value`` as it may come in a raw URL path: each character literal or
    percent-encoded (``c++`` as ``c%2B%2B`` too), since tornado matches routes before unquoting."""
    parts = []
    for char in value:
        encoded = quote(char, safe="")
        if encoded == char:
            parts.append(re.escape(char))
        else:
            any_case = "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in encoded)
            parts.append(f"(?:{re.escape(char)}|{any_case})")
    return "".join(parts)


def same_database(url: str) -> str:
    """One spelling per database, to find courses sharing one: SQLite files by resolved path."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        parsed = parsed.set(database=str(Path(parsed.database).resolve()))
    return parsed.render_as_string(hide_password=False)


def parse_courses(
    raw: Mapping[str, Any], default_exchange: str, reserved: Collection[str] = ()
) -> dict[str, Course]:
    """Courses from the ``courses`` option; ValueError naming the course and key that is wrong.

    ``{"course101": {"root": "/srv/course101", "db_url": "postgresql://...",
    "exchange": "/srv/exchange"}}``; ``db_url`` defaults to SQLite in the course root and
    ``exchange`` to ``default_exchange``. A course id in ``reserved`` (the first path segment
    of one of the service's own routes) would take that route over under the same URL; two
    courses on one gradebook database would mix their grades: both are refused.
    """
    courses: dict[str, Course] = {}
    by_database: dict[str, str] = {}
    for course_id, spec in raw.items():
        if not is_safe_id(course_id):
            raise ValueError(f"course id {course_id!r} must be letters, digits, '_.@+-'")
        if course_id in reserved:
            raise ValueError(
                f"course id {course_id!r} is taken by the service's own route "
                f"<prefix>{course_id}; reserved: {', '.join(sorted(reserved))}"
            )
        if not isinstance(spec, Mapping) or not spec.get("root"):
            raise ValueError(f"course {course_id!r} needs at least a 'root' directory")
        unknown = set(spec) - _COURSE_KEYS
        if unknown:
            raise ValueError(f"course {course_id!r}: unknown key(s) {', '.join(sorted(unknown))}")
        root = Path(spec["root"])
        if not root.is_absolute():
            raise ValueError(f"course {course_id!r}: root must be an absolute path, not {root}")
        exchange = Path(spec.get("exchange") or default_exchange)
        if not exchange.is_absolute():
            raise ValueError(f"course {course_id!r}: exchange must be absolute, not {exchange}")
        if not isinstance(spec.get("nbgrader", {}), Mapping):
            raise ValueError(f"course {course_id!r}: 'nbgrader' must be a dict of config sections")
        db_url = spec.get("db_url") or f"sqlite:///{root / 'gradebook.db'}"
        try:
            database = same_database(db_url)
        except Exception:  # SQLAlchemy's ArgumentError, or a URL it cannot even split
            raise ValueError(f"course {course_id!r}: db_url is not a database URL") from None
        if database in by_database:
            raise ValueError(
                f"courses {by_database[database]!r} and {course_id!r} have the same gradebook "
                "database (db_url, or root when db_url is not set): each course needs its own"
            )
        by_database[database] = course_id
        courses[course_id] = Course(
            id=course_id,
            root=root,
            db_url=db_url,
            exchange=exchange,
            timezone=spec.get("timezone", "UTC"),
            nbgrader=dict(spec.get("nbgrader", {})),
        )
    return courses


def may_grade(
    model: Mapping[str, Any], course_id: str, *, group_pattern: str, service_wide: bool
) -> bool:
    """Whether a hub user may grade ``course_id``.

    ``service_wide`` is the service's own verdict (hub admin with ``allow_admin``, or named in
    ``allowed_users``/``allowed_groups``): those grade every course. Others must be in the
    course's grader group.
    """
    if service_wide:
        return True
    if model.get("kind", "user") != "user":
        return False
    return group_pattern.format(course=course_id) in model.get("groups", [])


def worker_env(environ: Mapping[str, str], bindir: str) -> dict[str, str]:
    """The environment for a worker: only harmless variables survive, never a token.

    ``bindir`` (the service's Python's) goes first on PATH: nbgrader runs ``alembic`` from
    PATH when it creates a gradebook, and kernels are found next to the Python.
    """
    return child_env(environ, path_first=bindir)


def browser_safe_type(content_type: str | None) -> str:
    """The type to serve a student's file as: never one a browser would run as script."""
    if not content_type:
        return "application/octet-stream"
    if content_type.endswith(("javascript", "ecmascript", "jscript")):
        return "text/plain"
    return content_type


_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script\s*>", re.I | re.S)
_HANDLER = re.compile(r"""\son[a-z]+\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)
_NON_JS_TYPE = re.compile(
    r"""\btype\s*=\s*["']?+(?!text/javascript|module|application/javascript)""", re.I
)


def csp_hash(source: str) -> str:
    """``source``'s CSP hash, as a browser computes it for an inline script or handler."""
    digest = hashlib.sha256(source.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def inline_scripts(text: str) -> list[str]:
    """The bodies of the inline JavaScript elements in ``text`` (other script types do not run)."""
    return [
        match.group("body")
        for match in _SCRIPT.finditer(text)
        if "src=" not in match.group("attrs").lower()
        and not _NON_JS_TYPE.search(match.group("attrs"))
    ]


def event_handlers(text: str) -> set[str]:
    """The JavaScript of the ``on…=`` attributes in ``text``, unescaped as a browser hashes it."""
    return {html.unescape(m.group(1) or m.group(2) or "") for m in _HANDLER.finditer(text)}


def page_csp(script_hashes: Iterable[str], handler_hashes: Iterable[str] = ()) -> str:
    """The Content-Security-Policy of an nbgrader page: its own scripts, by hash, and no other.

    Styles may be inline (nbconvert inlines its CSS and nbgrader uses style attributes).
    """
    script = sorted(script_hashes)
    handlers = sorted(handler_hashes)
    if handlers:
        script += ["'unsafe-hashes'", *handlers]
    return content_security_policy(
        {"script-src": script, "style-src": ["'unsafe-inline'"], "font-src": ["data:"]}
    )


#: A student's own file (image, HTML, data) from a submission: no script, no same origin.
SANDBOX_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
