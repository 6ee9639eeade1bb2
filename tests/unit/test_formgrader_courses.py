"""The formgrader's decisions: course config, who grades what, safe ids, worker env, CSP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hubservices.formgrader.app import FormGrader
from hubservices.formgrader.courses import (
    SANDBOX_CSP,
    browser_safe_type,
    csp_hash,
    event_handlers,
    inline_scripts,
    is_safe_id,
    may_grade,
    page_csp,
    parse_courses,
    path_pattern,
    worker_env,
)
from hubservices.formgrader.worker import course_from_json, course_to_json, nbgrader_config


def test_courses_get_defaults_and_keep_their_settings() -> None:
    courses = parse_courses(
        {
            "c1": {"root": "/srv/c1"},
            "c2": {
                "root": "/srv/c2",
                "db_url": "postgresql://u:p@db/c2",
                "exchange": "/srv/ex2",
                "nbgrader": {"ExecutePreprocessor": {"timeout": 5}},
            },
        },
        "/srv/exchange",
    )
    assert courses["c1"].db_url == "sqlite:////srv/c1/gradebook.db"
    assert courses["c1"].exchange == Path("/srv/exchange")
    assert courses["c2"].exchange == Path("/srv/ex2")
    config = nbgrader_config(courses["c2"])
    assert config.CourseDirectory.course_id == "c2"
    assert config.CourseDirectory.db_url == "postgresql://u:p@db/c2"
    assert config.Exchange.root == "/srv/ex2"
    assert config.ExecutePreprocessor.timeout == 5
    assert course_from_json(course_to_json(courses["c2"])) == courses["c2"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"../x": {"root": "/srv/x"}}, "course id"),
        ({"c": {}}, "needs at least a 'root'"),
        ({"c": {"root": "relative"}}, "absolute"),
        ({"c": {"root": "/r", "exchange": "ex"}}, "exchange must be absolute"),
        ({"c": {"root": "/r", "dburl": "x"}}, "unknown key(s) dburl"),
        ({"c": {"root": "/r", "nbgrader": []}}, "'nbgrader' must be a dict"),
    ],
)
def test_bad_course_config_is_named(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_courses(raw, "/srv/exchange")


def test_bad_courses_option_stops_the_service() -> None:
    app = FormGrader()
    with pytest.raises(SystemExit) as exit_info:
        app.load_config(["--FormGrader.courses=c=1"])
    assert exit_info.value.code == 2


def start_formgrader(tmp_path: Path, courses: dict) -> subprocess.CompletedProcess:
    """The service started as the hub would, with ``courses`` in its config file."""
    config = tmp_path / "formgrader_config.py"
    config.write_text(f"c.FormGrader.courses = {json.dumps(courses)}\n")
    return subprocess.run(
        [sys.executable, "-m", "hubservices.formgrader", f"--config={config}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JUPYTERHUB_API_TOKEN": "t", "HUBSERVICES_DATA_DIR": str(tmp_path)},
    )


def refused_in_one_line(result: subprocess.CompletedProcess, says: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and says in lines[0], result.stderr


def test_the_service_s_own_route_names_are_reserved() -> None:
    """A course named like a route of the service would take it over under the same URL."""
    assert FormGrader().reserved_course_ids() == {
        "oauth_callback", "health", "metrics", "logout", "api", "static", "courses", "mathjax",
    }  # fmt: skip


def test_a_course_shadowing_a_route_is_refused_at_start_in_one_line(tmp_path: Path) -> None:
    result = start_formgrader(tmp_path, {"metrics": {"root": str(tmp_path / "c")}})
    refused_in_one_line(result, "course id 'metrics' is taken by the service's own route")


@pytest.mark.parametrize("course_id", ["static", "oauth_callback", "health", "api", "logout"])
def test_every_shadowing_course_id_is_refused(course_id: str) -> None:
    with pytest.raises(ValueError, match=f"course id '{course_id}' is taken"):
        parse_courses({course_id: {"root": "/c"}}, "/x", FormGrader().reserved_course_ids())


def test_two_courses_on_one_gradebook_are_refused_at_start_in_one_line(tmp_path: Path) -> None:
    shared = f"sqlite:///{tmp_path}/shared.db"
    result = start_formgrader(
        tmp_path,
        {"c1": {"root": f"{tmp_path}/c1", "db_url": shared},
         "c2": {"root": f"{tmp_path}/c2", "db_url": shared}},
    )  # fmt: skip
    refused_in_one_line(result, "courses 'c1' and 'c2' have the same gradebook database")


@pytest.mark.parametrize(
    "second",
    [
        {
            "root": "/c2",
            "db_url": "sqlite:////srv/x/../shared.db",
        },  # the same file, spelt otherwise
        {"root": "/c1"},  # the same default gradebook in the same root
    ],
)
def test_two_courses_on_one_gradebook_spelt_otherwise_are_refused(second: dict) -> None:
    first = (
        {"root": "/c1"}
        if "db_url" not in second
        else {"root": "/c1", "db_url": "sqlite:////srv/shared.db"}
    )
    with pytest.raises(ValueError, match="courses 'c1' and 'c2' have the same gradebook database"):
        parse_courses({"c1": first, "c2": second}, "/srv/exchange")


def test_courses_on_one_postgresql_server_but_other_databases_are_fine() -> None:
    courses = parse_courses(
        {
            "c1": {"root": "/srv/c1", "db_url": "postgresql://u:p@db/c1"},
            "c2": {"root": "/srv/c2", "db_url": "postgresql://u:p@db/c2"},
        },
        "/srv/exchange",
    )
    assert set(courses) == {"c1", "c2"}


def test_a_password_in_a_shared_db_url_is_not_shown() -> None:
    url = "postgresql://u:s3cret@db/grades"
    with pytest.raises(ValueError) as refused:
        parse_courses(
            {"a": {"root": "/a", "db_url": url}, "b": {"root": "/b", "db_url": url}}, "/x"
        )
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("course_id", "path", "matches"),
    [
        ("c++", "c++", True),
        ("c++", "c%2B%2B", True),  # as encodeURIComponent or urllib's quote write it
        ("c++", "c%2b%2B", True),
        ("c++", "cc", False),  # '+' is no regex operator here
        ("x@y.org", "x%40y.org", True),
        ("x@y.org", "x@yAorg", False),  # nor is '.'
    ],
)
def test_course_ids_in_paths(course_id: str, path: str, matches: bool) -> None:
    assert bool(re.fullmatch(path_pattern(course_id), path)) is matches


@pytest.mark.parametrize("value", ["ps1", "student.name", "a-b_c", "x@example.org", "s1+tag"])
def test_safe_ids(value: str) -> None:
    assert is_safe_id(value)


@pytest.mark.parametrize(
    "value", ["", ".", "..", ".hidden", "a/b", "a\\b", "*", "ps[1]", "a?", "x" * 200, "a\x00"]
)
def test_unsafe_ids(value: str) -> None:
    assert not is_safe_id(value)


def test_who_grades_a_course() -> None:
    grader = {"kind": "user", "name": "t", "groups": ["formgrade-c1"]}
    pattern = "formgrade-{course}"
    assert may_grade(grader, "c1", group_pattern=pattern, service_wide=False)
    assert not may_grade(grader, "c2", group_pattern=pattern, service_wide=False)
    # the service's own verdict (admin, allowed_users/groups) covers every course
    assert may_grade({"name": "a", "groups": []}, "c2", group_pattern=pattern, service_wide=True)
    service = {"kind": "service", "name": "x", "groups": ["formgrade-c1"]}
    assert not may_grade(service, "c1", group_pattern=pattern, service_wide=False)


def test_app_courses_of_users() -> None:
    app = FormGrader(grader_group_pattern="graders-{course}")
    app.runtimes = {"c1": None, "c2": None}  # type: ignore[dict-item]
    teacher = {"kind": "user", "name": "t", "admin": False, "groups": ["graders-c1", "x"]}
    admin = {"kind": "user", "name": "a", "admin": True, "groups": []}
    student = {"kind": "user", "name": "s", "admin": False, "groups": ["students"]}
    assert app.courses_of(teacher) == ["c1"]
    assert app.courses_of(admin) == ["c1", "c2"]
    # every user may come in (to their own grades page); courses stay their graders'
    assert app.user_allowed(student) and not app.may_grade_course(student, "c1")
    assert not app.user_allowed({"kind": "service", "name": "other"})
    assert app.may_grade_course(teacher, "c1") and not app.may_grade_course(teacher, "c2")
    assert app.may_grade_course(admin, "c2")
    # creating grader groups for courses added at run time, and nothing more
    assert app.required_scopes() == ["admin:groups"]
    assert FormGrader(manage_courses=False).required_scopes() == []


def test_worker_env_drops_tokens_and_secrets() -> None:
    env = worker_env(
        {
            "PATH": "/usr/bin",
            "HOME": "/home/svc",
            "JUPYTERHUB_API_TOKEN": "secret",
            "JUPYTERHUB_API_URL": "http://hub",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "PGPASSWORD": "secret",
            "LANG": "C.UTF-8",
        },
        "/venv/bin",
    )
    assert env == {"PATH": "/venv/bin:/usr/bin", "HOME": "/home/svc", "LANG": "C.UTF-8"}


@pytest.mark.parametrize(
    ("given", "served"),
    [
        ("application/javascript", "text/plain"),
        ("text/javascript", "text/plain"),
        ("application/x-ecmascript", "text/plain"),
        ("image/png", "image/png"),
        ("text/html", "text/html"),
        (None, "application/octet-stream"),
    ],
)
def test_student_files_are_never_script(given: str | None, served: str) -> None:
    assert browser_safe_type(given) == served


PAGE = """<html><head>
<script src="/x.js"></script>
<script>var base_url = "/b";</script>
<script type="text/javascript">init();</script>
<script type="text/x-mathjax-config">MathJax.Hub.Config({});</script>
</head><body><nav><span onclick="toggle_name(true);"></span><script>tips();</script></nav>
<img src=x onerror='alert(&quot;1&quot;)'>
</body></html>"""


def test_inline_code_is_found_as_browsers_run_it() -> None:
    # scripts with a src, or of a type that is not JavaScript, are not inline code
    assert inline_scripts(PAGE) == ['var base_url = "/b";', "init();", "tips();"]
    assert event_handlers(PAGE) == {"toggle_name(true);", 'alert("1")'}
    csp = page_csp({csp_hash("init();")}, {csp_hash("toggle_name(true);")})
    script_src = csp.split("; ")[1]
    assert script_src.startswith("script-src 'self'") and "'unsafe-inline'" not in script_src
    assert csp_hash("init();") in script_src
    assert "'unsafe-hashes' " + csp_hash("toggle_name(true);") in script_src
    assert "'unsafe-hashes'" not in page_csp({csp_hash("init();")})


def test_hashes_match_what_browsers_compute() -> None:
    # sha256 of "alert(1)" as CSP spells it
    assert csp_hash("alert(1)") == "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"
    assert "sandbox" in SANDBOX_CSP and "script-src" not in SANDBOX_CSP
