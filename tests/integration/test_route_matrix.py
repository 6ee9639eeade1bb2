"""Every route of every service against every kind of caller: the route matrix (issue 12).

The routes are the services' own: each service application is opened in this process with the
hub's options and its tornado routers are walked (the formgrader's course applications with
nbgrader's reused routes, tornado's static routes, exports, metrics, health), so a route added to
a service and missing from :data:`MATRIX` fails ``test_every_route_is_in_the_matrix`` by name.

Each route is then asked, through the hub's proxy, with real path parameters (the sample
course's assignment, student, submission, grade... ids, made by a real autograde), by every
caller of :data:`CALLERS`; users log in through the hub's real OAuth flow. What each caller must
get is in MATRIX, the one table of expected answers, which reads as the services' access rules.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tornado.routing import PathMatches, RuleRouter
from tornado.web import Application, StaticFileHandler

from hubservices.common.app import HubServiceApp
from hubservices.common.hubapi import HubAPI
from hubservices.cull.app import Culler
from hubservices.formgrader.app import FormGrader
from hubservices.formgrader.catalogpages import CourseRouter
from hubservices.formgrader.courses import path_pattern
from hubservices.stats.app import Stats
from tests.harness.autograde import RIGHT
from tests.harness.formgrader import SAMPLE, Grader, wait_batch
from tests.harness.hostile import submit
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

SERVICES: dict[str, type[HubServiceApp]] = {
    "cull": Culler,
    "stats": Stats,
    "formgrader": FormGrader,
}
#: The formgrader's courses: the sample course, another one, and one whose id needs escaping.
COURSES = ("course1", "course2", "c++")
GROUPS = {"formgrade-course1": ["teacher1"], "formgrade-course2": ["teacher2"],
          "formgrade-c++": ["teacher3"]}  # fmt: skip

#: Hostile ids (issue 12): put in every path parameter of every route, URL-quoted as a browser
#: would send them, and as user and group names on the hub.
HOSTILE = ["#", "?", "/", "%", "..", "ünï", "=cmd|x", "<img src=x onerror=alert(1)>"]

# -- who asks ---------------------------------------------------------------------------------

#: The callers, each a column of the matrix. Cookies come from the hub's login form and the
#: service's OAuth flow; tokens are the admin's, made through the hub's API for this test.
CALLERS = {
    "anonymous": "no cookie, no token",
    "student": "student1: a hub user in no grader group",
    "other grader": "teacher2: grades course2, not course1",
    "grader": "teacher1: grades course1 (the sample course)",
    "admin": "a hub admin",
    "token -scope": "an admin's token without access to the service (read:users:name!user)",
    "token +scope": "an admin's token with access:services!service=<name> (for /metrics: the "
    "service's metrics_scope)",
    "cookie, no XSRF": "the admin's cookie, POST/PUT/DELETE without the XSRF token",
}

# -- who may: a row's access, and what it means for each caller --------------------------------

PUBLIC = "public"  #: everyone, anonymous included
USERS = "users"  #: every hub user, each seeing their own (servers, grades)
ADMINS = "admins"  #: hub admins (cull and stats have no other users by default)
COURSE = "course"  #: the course's graders, and admins
#: /metrics: hub admins and a token with the metrics scope (Prometheus's) only.
METRICS = "admins and the metrics token"
#: Not under the service prefix: the proxy sends these paths to the hub, never to the service.
#: Asked at the service's own port instead, where they find no file.
OUTSIDE = "outside the prefix"

ALLOWED = {
    PUBLIC: set(CALLERS),
    USERS: {"student", "other grader", "grader", "admin", "token +scope"},
    ADMINS: {"admin", "token +scope"},
    COURSE: {"grader", "admin", "token +scope"},
    METRICS: {"admin", "token +scope"},
    OUTSIDE: set(CALLERS),
}

#: An answer: a status code, or LOGIN: a redirect to the hub's OAuth (a browser logs in).
LOGIN = "login"
#: A method the route does not have: 405, or 403 where the XSRF check comes first.
REFUSED = (403, 405)
STATE_CHANGES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Row:
    """A route, as the service declares it, and what it answers.

    ``answers``: the status the allowed callers get, by method (the methods the route has).
    ``page``: anonymous browsers are sent to log in (pages) instead of a 403 (APIs).
    """

    path: str  #: the example asked; {submission}, {grade}... are the sample course's ids
    access: str
    answers: dict[str, int]
    page: bool = False
    body: Any = None  #: JSON body of PUT/POST
    #: Methods only admins may use, where the route's GET is for more callers.
    admin_methods: tuple[str, ...] = ()

    def expected(self, caller: str, method: str) -> int | str | tuple[int, ...]:
        if caller == "cookie, no XSRF":
            return 403 if method in self.answers else REFUSED
        if method in self.admin_methods and caller not in ALLOWED[ADMINS]:
            return 403
        if caller in ALLOWED[self.access]:
            return self.answers[method]
        if caller == "anonymous" and self.page and method == "GET":
            return LOGIN
        return 403


def page(path: str, access: str, **answers: int) -> Row:
    return Row(path, access, answers, page=True)


def api(path: str, access: str, body: Any = None, **answers: int) -> Row:
    return Row(path, access, answers, body=body)


#: THE TABLE: (service, route pattern relative to the service prefix; <course>/ for every
#: course's routes) -> the example asked, who may, and what the allowed get, by method.
#: Everyone else gets 403 (anonymous browsers: a login redirect on pages); a cookie POST/PUT/
#: DELETE without the XSRF token gets 403 where the route has the method, 403 or 405 elsewhere.
def common_rows(access: str, api_user: str) -> dict[str, Row]:
    return {
        "static/(.*)": page("static/style.css", PUBLIC, GET=200),
        "/(favicon\\.ico)": page("/favicon.ico", OUTSIDE, GET=404),
        "/(robots\\.txt)": page("/robots.txt", OUTSIDE, GET=404),
        "oauth_callback": page("oauth_callback", PUBLIC, GET=400),  # no OAuth code: 400
        "health": api("health", PUBLIC, GET=200),
        "metrics": api("metrics", METRICS, GET=200),
        "logout": page("logout", access, POST=302),  # to the hub's logout
        "api/user": api("api/user", api_user, GET=200),
    }


NBGRADER_ACTION = {"POST": 200}  # nbgrader's long actions, run as jobs, answered when done
MATRIX: dict[tuple[str, str], Row] = {
    **{("cull", route): row for route, row in common_rows(ADMINS, ADMINS).items()},
    # every user: their own servers; POST "run a cycle now": admins
    ("cull", ""): Row("", USERS, {"GET": 200, "POST": 303}, page=True, admin_methods=("POST",)),
    # "keep it running": a form naming the caller's own server; asked without one, it is
    # refused for all (the own-server rule, with forms, is tested with the cull pages)
    ("cull", "keep"): page("keep", USERS, POST=403),
    ("cull", "api/status"): api("api/status", ADMINS, GET=200),
    ("cull", "api/cycles"): api("api/cycles", ADMINS, GET=200, POST=202),
    ("cull", "api/culls"): api("api/culls", ADMINS, GET=200),
    ("cull", "api/upcoming"): api("api/upcoming", ADMINS, GET=200),
    ("cull", "assets/(.*)"): page("assets/cull.js", PUBLIC, GET=200),  # "Run a cycle now"'s JS
    **{("stats", route): row for route, row in common_rows(ADMINS, ADMINS).items()},
    ("stats", ""): page("", ADMINS, GET=200),
    ("stats", "api/dashboard"): api("api/dashboard", ADMINS, GET=200),
    ("stats", "api/usage"): api("api/usage", ADMINS, GET=200),
    ("stats", "api/users/([^/]+)/sessions"): api("api/users/admin/sessions", ADMINS, GET=200),
    ("stats", "assets/(.*)"): page("assets/dashboard.js", PUBLIC, GET=200),  # the dashboard's JS
    **{("formgrader", route): row for route, row in common_rows(USERS, USERS).items()},
    # every user: the courses they grade, and their own grades as a student
    ("formgrader", ""): page("", USERS, GET=200),
    ("formgrader", "api/grades"): api("api/grades", USERS, GET=200),
    # released feedback of the caller's own (none here)
    ("formgrader", "api/feedback/([^/]+)/([^/]+)/([^/]+)"): page(
        "api/feedback/course1/ps1/problem1", USERS, GET=404
    ),
    # courses at run time (admins); bodies that change nothing: the access check comes first
    ("formgrader", "api/courses"): api("api/courses", ADMINS, {}, GET=200, POST=400),
    ("formgrader", "api/courses/([^/]+)"): api(
        "api/courses/course1",
        ADMINS,
        {},
        PATCH=409,
        DELETE=409,  # a config course
    ),
    ("formgrader", "courses"): page("courses", ADMINS, POST=400),
    # MathJax for the grading page and for feedback opened from students' own servers
    ("formgrader", "mathjax/(.*)"): page("mathjax/MathJax.js", PUBLIC, GET=200),
    ("formgrader", "mathjax/config/local/(hubservices\\.js)"): page(
        "mathjax/config/local/hubservices.js", PUBLIC, GET=200
    ),
    # our course routes
    ("formgrader", "<course>/"): page("course1/", COURSE, GET=200),
    ("formgrader", "<course>/api/jobs"): api("course1/api/jobs", COURSE, GET=200),
    ("formgrader", "<course>/api/jobs/(\\d+)"): api("course1/api/jobs/{job}", COURSE, GET=200),
    ("formgrader", "<course>/api/batches/(\\d+)"): api(
        "course1/api/batches/{batch}", COURSE, GET=200
    ),
    ("formgrader", "<course>/api/batches/(\\d+)/cancel"): api(
        "course1/api/batches/{batch}/cancel", COURSE, POST=200
    ),
    ("formgrader", "<course>/api/assignment/([^/]+)/autograde"): api(
        "course1/api/assignment/ps1/autograde", COURSE, POST=202
    ),
    (
        "formgrader",
        "<course>/api/assignment/([^/]+)/(generate|release|unrelease|collect|generate_feedback"
        "|release_feedback)",
    ): api("course1/api/assignment/ps1/collect", COURSE, POST=202),
    (
        "formgrader",
        "<course>/api/submission/([^/]+)/([^/]+)/(autograde|generate_feedback|release_feedback)",
    ): api("course1/api/submission/ps1/student1/generate_feedback", COURSE, POST=202),
    ("formgrader", "<course>/graders"): page("course1/graders", COURSE, GET=200, POST=400),
    ("formgrader", "<course>/api/graders"): api(
        "course1/api/graders", COURSE, {}, GET=200, POST=400
    ),
    ("formgrader", "<course>/api/graders/([^/]+)"): api(
        "course1/api/graders/nobody", COURSE, DELETE=400
    ),
    ("formgrader", "<course>/api/assignment/([^/]+)/source"): api(
        "course1/api/assignment/ps1/source",
        COURSE,
        GET=200,
        POST=400,  # no file sent
    ),
    ("formgrader", "<course>/api/assignment/([^/]+)/source/([^/]+)"): page(
        "course1/api/assignment/ps1/source/problem1.ipynb", COURSE, GET=200
    ),
    ("formgrader", "<course>/api/roster/(group|csv)"): api(
        "course1/api/roster/csv",
        COURSE,
        POST=400,  # no file sent
    ),
    ("formgrader", "<course>/view/(source|release)/([^/]+)/"): page(
        "course1/view/source/ps1/", COURSE, GET=200
    ),
    ("formgrader", "<course>/view/(source|release)/([^/]+)/([^/]+)"): page(
        "course1/view/source/ps1/problem1.ipynb", COURSE, GET=200
    ),
    ("formgrader", "<course>/export/(canvas|moodle).csv"): page(
        "course1/export/canvas.csv", COURSE, GET=200
    ),
    ("formgrader", "<course>/export/([^/]+)/(canvas|moodle).csv"): page(
        "course1/export/ps1/moodle.csv", COURSE, GET=200
    ),
    ("formgrader", "<course>/export/grades.csv"): page(
        "course1/export/grades.csv", COURSE, GET=200
    ),
    ("formgrader", "<course>/export/([^/]+)/grades.csv"): page(
        "course1/export/ps1/grades.csv", COURSE, GET=200
    ),
    # nbgrader's pages, in its own order
    ("formgrader", "<course>/formgrader/?"): page("course1/formgrader", COURSE, GET=302),
    ("formgrader", "<course>/formgrader/manage_assignments/?"): page(
        "course1/formgrader/manage_assignments", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/manage_submissions/([^/]+)/?"): page(
        "course1/formgrader/manage_submissions/ps1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/gradebook/?"): page(
        "course1/formgrader/gradebook", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/gradebook/([^/]+)/?"): page(
        "course1/formgrader/gradebook/ps1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/gradebook/([^/]+)/([^/]+)/?"): page(
        "course1/formgrader/gradebook/ps1/problem1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/manage_students/?"): page(
        "course1/formgrader/manage_students", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/manage_students/([^/]+)/?"): page(
        "course1/formgrader/manage_students/student1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/manage_students/([^/]+)/([^/]+)/?"): page(
        "course1/formgrader/manage_students/student1/ps1", COURSE, GET=200
    ),
    # nbgrader 0.9 ships no components/ nor fonts/ folder: its routes find no file
    ("formgrader", "<course>/formgrader/submissions/components/(.*)"): page(
        "course1/formgrader/submissions/components/x.js", COURSE, GET=404
    ),
    ("formgrader", "<course>/formgrader/submissions/([^/]+)/?"): page(
        "course1/formgrader/submissions/{submission}/", COURSE, GET=200
    ),
    (
        "formgrader",
        "<course>/formgrader/submissions/(?P<submission_id>[^/]+)/"
        "(?P<action>next_incorrect|prev_incorrect|next|prev)/?",
    ): page("course1/formgrader/submissions/{submission}/next", COURSE, GET=302),
    ("formgrader", "<course>/formgrader/submissions/(.*)"): page(  # the student's own files
        "course1/formgrader/submissions/{submission}/problem1.ipynb", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/fonts/(.*)"): page(
        "course1/formgrader/fonts/x.woff", COURSE, GET=404
    ),
    # nbgrader's API
    ("formgrader", "<course>/formgrader/api/status"): api(
        "course1/formgrader/api/status", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/assignments"): api(
        "course1/formgrader/api/assignments", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/assignment/([^/]+)"): api(
        "course1/formgrader/api/assignment/ps1", COURSE, {}, GET=200, PUT=200
    ),
    **{
        ("formgrader", f"<course>/formgrader/api/assignment/([^/]+)/{action}"): api(
            f"course1/formgrader/api/assignment/ps1/{action}", COURSE, **NBGRADER_ACTION
        )
        for action in (
            "assign",
            "unrelease",
            "release",
            "collect",
            "generate_feedback",
            "release_feedback",
        )
    },  # fmt: skip
    **{
        ("formgrader", f"<course>/formgrader/api/assignment/([^/]+)/([^/]+)/{action}"): api(
            f"course1/formgrader/api/assignment/ps1/student1/{action}", COURSE, **NBGRADER_ACTION
        )
        for action in ("generate_feedback", "release_feedback")
    },
    ("formgrader", "<course>/formgrader/api/notebooks/([^/]+)"): api(
        "course1/formgrader/api/notebooks/ps1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/submissions/([^/]+)"): api(
        "course1/formgrader/api/submissions/ps1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/submission/([^/]+)/([^/]+)"): api(
        "course1/formgrader/api/submission/ps1/student1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/submission/([^/]+)/([^/]+)/autograde"): api(
        "course1/formgrader/api/submission/ps1/student1/autograde", COURSE, **NBGRADER_ACTION
    ),
    ("formgrader", "<course>/formgrader/api/submitted_notebooks/([^/]+)/([^/]+)"): api(
        "course1/formgrader/api/submitted_notebooks/ps1/problem1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/submitted_notebook/([^/]+)/flag"): api(
        "course1/formgrader/api/submitted_notebook/{submission}/flag", COURSE, POST=200
    ),
    ("formgrader", "<course>/formgrader/api/grades"): api(
        "course1/formgrader/api/grades?submission_id={submission}", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/grade/([^/]+)"): api(
        "course1/formgrader/api/grade/{grade}", COURSE, {"manual_score": 1}, GET=200, PUT=200
    ),
    ("formgrader", "<course>/formgrader/api/comments"): api(
        "course1/formgrader/api/comments?submission_id={submission}", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/comment/([^/]+)"): api(
        "course1/formgrader/api/comment/{comment}",
        COURSE,
        {"manual_comment": "ok"},
        GET=200,
        PUT=200,
    ),  # fmt: skip
    ("formgrader", "<course>/formgrader/api/students"): api(
        "course1/formgrader/api/students", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/student/([^/]+)"): api(
        "course1/formgrader/api/student/student1", COURSE, {}, GET=200, PUT=200
    ),
    ("formgrader", "<course>/formgrader/api/student_submissions/([^/]+)"): api(
        "course1/formgrader/api/student_submissions/student1", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/api/student_notebook_submissions/([^/]+)/([^/]+)"): api(
        "course1/formgrader/api/student_notebook_submissions/student1/ps1", COURSE, GET=200
    ),
    # nbgrader's static files and our script for its pages
    ("formgrader", "<course>/formgrader/static/(.*)"): page(
        "course1/formgrader/static/js/utils.js", COURSE, GET=200
    ),
    ("formgrader", "<course>/formgrader/hubservices/(.*)"): page(
        "course1/formgrader/hubservices/shims.js", COURSE, GET=200
    ),
}

# -- the services' own route tables -----------------------------------------------------------


@dataclass
class Route:
    """A route as tornado dispatches it: the matchers from the service's router inward."""

    service: str
    key: str  #: relative to the prefix; ``<course>/`` for a course application's routes
    matchers: tuple[re.Pattern[str], ...]
    handler: type = field(repr=False)
    #: Under the formgrader's course router: a path of no course goes on to the next rules.
    falls_through: bool = False

    def matches(self, path: str) -> bool:
        return all(matcher.match(path) for matcher in self.matchers)


def walk(
    service: str,
    prefix: str,
    router: RuleRouter,
    outer: tuple[re.Pattern[str], ...] = (),
    course_base: str | None = None,
) -> list[Route]:
    """The handler routes under ``router``, in tornado's order, nested applications included.

    A course application's routes that do not start with the course's own path are tornado's
    static routes, which every application gets: its router is only handed paths under the
    course, so they cannot be reached, and are left out (the service's own are in the table).
    """
    routes: list[Route] = []
    for rule in router.rules:
        target, matcher = rule.target, rule.matcher
        path: tuple[re.Pattern[str], ...] = ()
        if isinstance(matcher, PathMatches):
            path = (matcher.regex,)
        if isinstance(target, CourseRouter):  # each course's application, looked up by id
            for course_id, app in target.apps.items():
                base = re.escape(prefix) + path_pattern(course_id)
                routes += [
                    replace(route, falls_through=True)
                    for route in walk(service, prefix, app.default_router, outer + path, base)
                ]
        elif isinstance(target, Application):
            routes += walk(service, prefix, target.default_router, outer + path, course_base)
        elif isinstance(target, RuleRouter):
            routes += walk(service, prefix, target, outer + path, course_base)
        else:
            assert isinstance(matcher, PathMatches), rule
            pattern = matcher.regex.pattern.removesuffix("$")
            if outer:  # a course application, under <prefix><course>
                base = course_base or outer[0].pattern.removesuffix("(?:/.*)?$")
                if not pattern.startswith(base + "/"):
                    assert target is StaticFileHandler, f"{pattern} can never be reached"
                    continue
                key = "<course>/" + pattern.removeprefix(base + "/")
            else:
                key = pattern.removeprefix(prefix)
            routes.append(Route(service, key, outer + path, target))
    return routes


async def route_table(name: str, work: Path, **options: Any) -> list[Route]:
    """The routes ``name`` serves, from its own application, opened with ``options``."""
    prefix = f"/services/{name}/"
    app = SERVICES[name](
        api_token="only-to-open", data_dir=str(work), service_prefix=prefix, **options
    )
    await app.open()
    try:
        return walk(name, prefix, app.make_web_app().default_router)
    finally:
        await app.close()


def dispatched(routes: list[Route], path: str) -> Route | None:
    """The route tornado picks for ``path``: the first outer match, then the first inner one."""
    for route in routes:
        if route.falls_through:
            if route.matches(path):
                return route
        elif route.matchers[0].match(path):
            outer = route.matchers[0]
            return next((r for r in routes if r.matchers[0] is outer and r.matches(path)), None)
    return None


# -- the hub, its sample course, the callers ---------------------------------------------------


@dataclass
class Setup:
    hub: Hub
    routes: list[Route]
    ids: dict[str, str]
    cookies: dict[str, httpx.Cookies]
    tokens: dict[str, dict[str, str]]  #: caller -> service -> token


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("matrix")
    exchange = work / "exchange"
    exchange.mkdir(mode=0o777)
    courses = {c: {"root": str(work / "courses" / c), "exchange": str(exchange)} for c in COURSES}
    config = work / "formgrader_config.py"
    config.write_text(
        f"c.FormGrader.courses = {json.dumps(courses)}\nc.FormGrader.max_workers = 2\n"
    )
    groups = {group: {"users": users} for group, users in GROUPS.items()}
    hub = Hub(
        work,
        # stats polls often, so that the admin's server is on record for its sessions route
        service_args={"formgrader": [f"--config={config}"], "stats": ["--poll-interval=2"]},
        extra_config=f"c.JupyterHub.load_groups = {json.dumps(groups)}\n",
        prometheus_token=secrets.token_hex(32),
    )
    opened = work / "opened"
    routes = []
    for name in SERVICES:
        options: dict[str, Any] = {}
        if name == "formgrader":
            options["courses"] = {c: {"root": str(opened / "courses" / c)} for c in COURSES}
        (opened / name).mkdir(parents=True)
        routes += asyncio.run(route_table(name, opened / name, **options))
    hub.start()
    clients: list[httpx.Client] = []
    try:
        ids = sample_course(hub, work / "courses" / "course1")
        cookies = {}
        for caller, user in (("student", "student1"), ("other grader", "teacher2"),
                             ("grader", "teacher1"), ("admin", "admin")):  # fmt: skip
            client = hub.browser(user)
            clients.append(client)
            for name in SERVICES:  # through each service's OAuth flow
                client.get(hub.service_url(name))
            cookies[caller] = client.cookies
        tokens = asyncio.run(make_tokens(hub))
        wait_until_on_record(hub, cookies["admin"], "admin")
        yield Setup(hub, routes, ids, cookies, tokens)
    finally:
        for client in clients:
            client.close()
        hub.stop()


def sample_course(hub: Hub, root: Path) -> dict[str, str]:
    """course1 with ps1 assigned and student1's submission autograded: the ids it has now."""
    teacher = Grader(hub, "admin")
    teacher.ok("PUT", "formgrader/api/assignment/ps1", {})
    shutil.copy(SAMPLE, root / "source" / "ps1" / "problem1.ipynb")
    teacher.ok("POST", "formgrader/api/assignment/ps1/assign")
    submit(root, "student1", RIGHT)
    queued = teacher.send("POST", "api/assignment/ps1/autograde").json()
    assert wait_batch(teacher, queued["batch"])["done"] == 1
    (notebook,) = teacher.ok("GET", "formgrader/api/submitted_notebooks/ps1/problem1")
    grades = teacher.ok("GET", f"formgrader/api/grades?submission_id={notebook['id']}")
    comments = teacher.ok("GET", f"formgrader/api/comments?submission_id={notebook['id']}")
    teacher.client.close()
    return {
        "submission": notebook["id"],
        "grade": grades[0]["id"],
        "comment": comments[0]["id"],
        "batch": str(queued["batch"]),
        "job": str(queued["students"]["student1"]),
    }


def wait_until_on_record(hub: Hub, cookies: httpx.Cookies, user: str) -> None:
    """Until stats has polled ``user``'s server (logging in started it)."""
    with httpx.Client(cookies=cookies) as admin:
        for _ in range(120):
            if admin.get(hub.service_url("stats", f"api/users/{user}/sessions")).status_code == 200:
                return
            time.sleep(0.5)
    raise AssertionError(f"stats never recorded {user}'s server")


async def make_tokens(hub: Hub) -> dict[str, dict[str, str]]:
    async with HubAPI(hub.api_url, hub.admin_token) as api:
        without = await api.create_token("admin", scopes=["read:users:name!user"])
        tokens: dict[str, dict[str, str]] = {"token -scope": {}, "token +scope": {}}
        for name in SERVICES:
            tokens["token -scope"][name] = tokens["token -scope"][f"{name}/metrics"] = without
            tokens["token +scope"][name] = await api.create_token(
                "admin", scopes=[f"access:services!service={name}"]
            )
            # the metrics scope is held by the prometheus service the snippet adds, and no user
            assert hub.prometheus_token is not None
            tokens["token +scope"][f"{name}/metrics"] = hub.prometheus_token
    return tokens


# -- asking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    service: str
    route: str
    caller: str
    method: str


async def ask(setup: Setup, probes: list[Probe], parallel: int = 6) -> dict[Probe, int | str]:
    """Each probe's answer (LOGIN for a redirect to the hub's OAuth), ``parallel`` at a time.

    Each caller has a client of its own: cookies one answer sets stay that caller's.
    """
    hub = setup.hub
    limit = asyncio.Semaphore(parallel)
    clients = {
        caller: httpx.AsyncClient(
            base_url=hub.url,
            timeout=300,
            # the caller without XSRF is the admin's browser
            cookies=httpx.Cookies(setup.cookies.get(caller.replace("cookie, no XSRF", "admin"))),
        )
        for caller in CALLERS
    }

    async def one(probe: Probe) -> int | str:
        row = MATRIX[probe.service, probe.route]
        path = row.path.format(**setup.ids)
        url = f"/services/{probe.service}/{path}"
        if row.access == OUTSIDE:  # the service's own port: the proxy never sends these
            url = f"http://127.0.0.1:{hub.service_ports[probe.service]}{path}"
        client = clients[probe.caller]
        headers: dict[str, str] = {}
        if probe.caller.startswith("token"):
            which = f"{probe.service}/metrics" if row.access == METRICS else probe.service
            headers["Authorization"] = f"token {setup.tokens[probe.caller][which]}"
        elif probe.caller in setup.cookies:
            xsrf = client.cookies.get("_xsrf", "", path=f"/services/{probe.service}/")
            headers["X-XSRFToken"] = xsrf or ""
        body = None if row.body is None else json.dumps(row.body)
        async with limit:
            r = await client.request(probe.method, url, headers=headers, content=body)
        if r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]:
            return LOGIN
        return r.status_code

    try:
        answers = await asyncio.gather(*(one(p) for p in probes))
    finally:
        for client in clients.values():
            await client.aclose()
    return dict(zip(probes, answers, strict=True))


def probes_of(keys: list[tuple[str, str]]) -> tuple[list[Probe], list[Probe], list[Probe]]:
    """Reads first, then state changes (jobs included), then logouts, which end the session."""
    reads, changes, logouts = [], [], []
    for service, route in keys:
        row = MATRIX[service, route]
        for caller in CALLERS:
            methods = STATE_CHANGES if caller == "cookie, no XSRF" else list(row.answers)
            for method in methods:
                probe = Probe(service, route, caller, method)
                if route == "logout" and method == "POST":
                    logouts.append(probe)
                elif method == "GET":
                    reads.append(probe)
                else:
                    changes.append(probe)
    return reads, changes, logouts


# -- the tests --------------------------------------------------------------------------------


def test_every_route_is_in_the_matrix(setup: Setup) -> None:
    served = {(r.service, r.key) for r in setup.routes}
    missing = sorted(served - set(MATRIX))
    assert not missing, f"routes no row of MATRIX covers: {missing}"
    gone = sorted(set(MATRIX) - served)
    assert not gone, f"rows of MATRIX for routes the services no longer have: {gone}"


def test_each_example_reaches_its_route(setup: Setup) -> None:
    """A row's example path is dispatched to the row's own route, not an earlier one."""
    wrong = {}
    for (service, key), row in MATRIX.items():
        if row.access == OUTSIDE:
            path = row.path
        else:
            path = f"/services/{service}/" + row.path.format(**setup.ids).split("?")[0]
        found = dispatched([r for r in setup.routes if r.service == service], path)
        if found is None or found.key != key:
            wrong[service, key] = (path, found and found.key)
    assert not wrong, wrong


def test_every_route_against_every_caller(setup: Setup) -> None:
    reads, changes, logouts = probes_of(list(MATRIX))
    answers: dict[Probe, int | str] = {}
    for phase in (reads, changes, logouts):
        answers.update(asyncio.run(ask(setup, phase)))
    wrong = []
    for p, got in answers.items():
        expected = MATRIX[p.service, p.route].expected(p.caller, p.method)
        if got not in (expected if isinstance(expected, tuple) else (expected,)):
            wrong.append(f"{p.service}:{p.route} {p.caller} {p.method}: {expected=}, {got=}")
    print(f"route matrix: {len(MATRIX)} routes x {len(CALLERS)} callers, {len(answers)} requests")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("spelt", ["c++", "c%2B%2B", "c%2b%2B"])
def test_a_course_id_with_plus_works_in_every_spelling(setup: Setup, spelt: str) -> None:
    """``c++`` as a browser sends it, and percent-encoded as encodeURIComponent writes it."""
    client = httpx.Client(base_url=setup.hub.url, cookies=setup.cookies["admin"])
    with client:
        page = client.get(f"/services/formgrader/{spelt}/")
        assert page.status_code == 200, page.text
        assert "<h1>c++</h1>" in page.text
        assert client.get(f"/services/formgrader/{spelt}/formgrader/api/assignments").json() == []
        listing = client.get("/services/formgrader/").text
    assert 'href="/services/formgrader/c++/"' in listing
    # its grader gets in, the others do not
    teacher3 = setup.hub.browser("teacher3")
    try:
        assert teacher3.get(f"/services/formgrader/{spelt}/").status_code == 200
    finally:
        teacher3.close()
    other = httpx.Client(base_url=setup.hub.url, cookies=setup.cookies["grader"])
    with other:
        assert other.get(f"/services/formgrader/{spelt}/").status_code == 403


@pytest.mark.parametrize("body", [b"", b"not json", b"[1]"])
def test_an_nbgrader_put_without_a_json_object_is_a_400(setup: Setup, body: bytes) -> None:
    """nbgrader's own handlers answered a PUT without a body with a 500 (``None.get``)."""
    admin = httpx.Client(base_url=setup.hub.url, cookies=setup.cookies["admin"])
    with admin:
        xsrf = admin.cookies.get("_xsrf", path="/services/formgrader/") or ""
        r = admin.put(
            "/services/formgrader/course1/formgrader/api/student/student1",
            content=body,
            headers={"X-XSRFToken": xsrf},
        )
    assert r.status_code == 400, r.text
    assert r.json()["message"] == "The request body must be a JSON object."


def hostile_variants(setup: Setup) -> list[tuple[Route, str, str]]:
    """(route, method, path): each row's example with one path parameter replaced by a hostile
    id, where the path still reaches the same route (``\\d+`` or an action name do not)."""
    variants = []
    for (service, key), row in MATRIX.items():
        if row.access == OUTSIDE:
            continue
        routes = [r for r in setup.routes if r.service == service]
        path, _, query = f"/services/{service}/{row.path.format(**setup.ids)}".partition("?")
        route = dispatched(routes, path)
        assert route is not None and route.key == key
        found = route.matchers[-1].match(path)
        assert found is not None
        for group in range(1, found.re.groups + 1):
            start, end = found.span(group)
            for hostile in HOSTILE:
                # dots too: clients resolve a literal ".." segment before sending it
                quoted = quote(hostile, safe="").replace(".", "%2E")
                changed = path[:start] + quoted + path[end:]
                if dispatched(routes, changed) is route:
                    for method in row.answers:
                        variants.append((route, method, changed + (f"?{query}" if query else "")))
    return variants


def test_hostile_ids_in_every_path_parameter(setup: Setup) -> None:
    """Refused with a 4xx, by the admin too; never a 500; never echoed as markup.

    Sent straight to each service's port, as anyone on the machine can: the proxy would
    resolve ``..`` (``%2E%2E`` too) before the service saw it.
    """
    variants = hostile_variants(setup)
    xsrf = {
        name: setup.cookies["admin"].get("_xsrf", path=f"/services/{name}/") for name in SERVICES
    }

    async def ask_all() -> list[httpx.Response]:
        limit = asyncio.Semaphore(6)
        async with httpx.AsyncClient(
            base_url=setup.hub.url, cookies=setup.cookies["admin"], timeout=120
        ) as admin:

            async def one(route: Route, method: str, path: str) -> httpx.Response:
                body = json.dumps(MATRIX[route.service, route.key].body or {})
                port = setup.hub.service_ports[route.service]
                async with limit:
                    return await admin.request(
                        method,
                        f"http://127.0.0.1:{port}{path}",
                        headers={"X-XSRFToken": xsrf[route.service] or ""},
                        content=body if method != "GET" else None,
                    )

            return await asyncio.gather(*(one(*variant) for variant in variants))

    wrong = []
    for (route, method, path), r in zip(variants, asyncio.run(ask_all()), strict=True):
        markup = "text/html" in r.headers.get("Content-Type", "") and "<img src=x" in r.text
        if not 400 <= r.status_code < 500 or markup:
            wrong.append(f"{route.service}:{route.key} {method} {path}: {r.status_code}")
    with httpx.Client(base_url=setup.hub.url, cookies=setup.cookies["admin"]) as admin:
        # nbgrader's own answered its files' route without "<submission id>/" with a 500
        files = admin.get("/services/formgrader/course1/formgrader/submissions/")
        assert files.status_code == 404, files.text
    print(f"hostile ids: {len(variants)} requests")
    assert len(variants) > 200
    assert not wrong, "\n".join(wrong)


def test_hostile_user_and_group_names(setup: Setup) -> None:
    """Users and grader groups named like markup, formulas or URL syntax: pages escape them,
    APIs find them by their URL-quoted names, nothing answers 500."""
    names = [h for h in HOSTILE if h not in ("/", "..")]  # the hub refuses these as user names

    async def make() -> None:
        async with HubAPI(setup.hub.api_url, setup.hub.admin_token) as api:
            await api.create_users(names)
            for name in names:
                await api.create_group(f"formgrade-{name}")
                await api.add_group_users(f"formgrade-{name}", [names[-1]])

    asyncio.run(make())
    hostile_user = setup.hub.browser(names[-1])  # "<img src=x onerror=alert(1)>" logs in
    try:
        listing = hostile_user.get(setup.hub.service_url("formgrader"))
        assert listing.status_code == 200, listing.text
        assert "<img src=x" not in listing.text
        assert listing.text.count("&lt;img src=x onerror=alert(1)&gt;") >= 2  # user, course
        assert "=cmd|x" in listing.text  # unconfigured courses from the groups, listed as text
        denied = hostile_user.get(setup.hub.service_url("stats"))
        assert denied.status_code == 403 and "<img src=x" not in denied.text
    finally:
        hostile_user.close()
    with httpx.Client(base_url=setup.hub.url, cookies=setup.cookies["admin"]) as admin:
        for name in names:
            quoted = quote(name, safe="")
            r = admin.get(f"/services/stats/api/users/{quoted}/sessions")
            assert r.status_code in (200, 404), (name, r.text)
            if r.status_code == 404:
                assert r.json()["message"] == f"No usage recorded for user {name!r}."
            usage = admin.get("/services/stats/api/usage", params={"user": name})
            assert usage.status_code == 200, (name, usage.text)
            grouped = admin.get("/services/stats/api/usage", params={"group": f"formgrade-{name}"})
            assert grouped.status_code == 200, (name, grouped.text)
        assert admin.get("/services/stats/api/dashboard").status_code == 200
        assert admin.get("/services/cull/api/upcoming").status_code == 200
