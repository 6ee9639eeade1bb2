"""The formgrader adapter: what it relies on in nbgrader, its CSP, and responses made on the loop.

The first tests list what :mod:`hubservices.formgrader.adapter` relies on in nbgrader (routes,
handler classes and their methods, the tornado methods their code calls, settings keys,
templates). After an nbgrader upgrade, the one that fails names what changed, and so what to
adapt.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from nbgrader.server_extensions.formgrader import apihandlers, base, formgrader, handlers
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets.config import Config

from hubservices.formgrader.adapter import (
    ACTIONS,
    FIXED_NAVBAR,
    GRADING_TEMPLATE,
    HEAD_END,
    NOT_IN_NBGRADER,
    GradingPageExporter,
    LoopResponse,
    nbgrader_templates,
    template_scripts,
)
from hubservices.formgrader.courses import csp_hash, event_handlers, inline_scripts

#: nbgrader's routes, in order, with the handler class and the HTTP methods it defines.
NBGRADER_ROUTES = [
    ("/formgrader/?", "FormgraderHandler", {"get"}),
    ("/formgrader/manage_assignments/?", "ManageAssignmentsHandler", {"get"}),
    ("/formgrader/manage_submissions/([^/]+)/?", "ManageSubmissionsHandler", {"get"}),
    ("/formgrader/gradebook/?", "GradebookAssignmentsHandler", {"get"}),
    ("/formgrader/gradebook/([^/]+)/?", "GradebookNotebooksHandler", {"get"}),
    (
        "/formgrader/gradebook/([^/]+)/([^/]+)/?",
        "GradebookNotebookSubmissionsHandler",
        {"get"},
    ),
    ("/formgrader/manage_students/?", "ManageStudentsHandler", {"get"}),
    ("/formgrader/manage_students/([^/]+)/?", "ManageStudentsAssignmentsHandler", {"get"}),
    (
        "/formgrader/manage_students/([^/]+)/([^/]+)/?",
        "ManageStudentNotebookSubmissionsHandler",
        {"get"},
    ),
    ("/formgrader/submissions/components/(.*)", "StaticFileHandler", {"get", "head"}),
    ("/formgrader/submissions/([^/]+)/?", "SubmissionHandler", {"get"}),
    (
        "/formgrader/submissions/(?P<submission_id>[^/]+)/"
        "(?P<action>next_incorrect|prev_incorrect|next|prev)/?",
        "SubmissionNavigationHandler",
        {"get"},
    ),
    ("/formgrader/submissions/(.*)", "SubmissionFilesHandler", {"get"}),
    ("/formgrader/fonts/(.*)", "StaticFileHandler", {"get", "head"}),
    ("/formgrader/api/status", "StatusHandler", {"get"}),
    ("/formgrader/api/assignments", "AssignmentCollectionHandler", {"get"}),
    ("/formgrader/api/assignment/([^/]+)", "AssignmentHandler", {"get", "put"}),
    ("/formgrader/api/assignment/([^/]+)/assign", "AssignHandler", {"post"}),
    ("/formgrader/api/assignment/([^/]+)/unrelease", "UnReleaseHandler", {"post"}),
    ("/formgrader/api/assignment/([^/]+)/release", "ReleaseHandler", {"post"}),
    ("/formgrader/api/assignment/([^/]+)/collect", "CollectHandler", {"post"}),
    (
        "/formgrader/api/assignment/([^/]+)/generate_feedback",
        "GenerateAllFeedbackHandler",
        {"post"},
    ),
    (
        "/formgrader/api/assignment/([^/]+)/release_feedback",
        "ReleaseAllFeedbackHandler",
        {"post"},
    ),
    (
        "/formgrader/api/assignment/([^/]+)/([^/]+)/generate_feedback",
        "GenerateFeedbackHandler",
        {"post"},
    ),
    (
        "/formgrader/api/assignment/([^/]+)/([^/]+)/release_feedback",
        "ReleaseFeedbackHandler",
        {"post"},
    ),
    ("/formgrader/api/notebooks/([^/]+)", "NotebookCollectionHandler", {"get"}),
    ("/formgrader/api/submissions/([^/]+)", "SubmissionCollectionHandler", {"get"}),
    ("/formgrader/api/submission/([^/]+)/([^/]+)", "SubmissionHandler", {"get"}),
    ("/formgrader/api/submission/([^/]+)/([^/]+)/autograde", "AutogradeHandler", {"post"}),
    (
        "/formgrader/api/submitted_notebooks/([^/]+)/([^/]+)",
        "SubmittedNotebookCollectionHandler",
        {"get"},
    ),
    ("/formgrader/api/submitted_notebook/([^/]+)/flag", "FlagSubmissionHandler", {"post"}),
    ("/formgrader/api/grades", "GradeCollectionHandler", {"get"}),
    ("/formgrader/api/grade/([^/]+)", "GradeHandler", {"get", "put"}),
    ("/formgrader/api/comments", "CommentCollectionHandler", {"get"}),
    ("/formgrader/api/comment/([^/]+)", "CommentHandler", {"get", "put"}),
    ("/formgrader/api/students", "StudentCollectionHandler", {"get"}),
    ("/formgrader/api/student/([^/]+)", "StudentHandler", {"get", "put"}),
    (
        "/formgrader/api/student_submissions/([^/]+)",
        "StudentSubmissionCollectionHandler",
        {"get"},
    ),
    (
        "/formgrader/api/student_notebook_submissions/([^/]+)/([^/]+)",
        "StudentNotebookSubmissionCollectionHandler",
        {"get"},
    ),
]

VERBS = {"get", "head", "post", "put", "patch", "delete", "options"}


def defined_verbs(cls: type) -> set[str]:
    """The HTTP methods a class defines itself (tornado's StaticFileHandler: GET and HEAD)."""
    return {verb for verb in VERBS if verb in vars(cls)}


def test_nbgraders_routes_handler_classes_and_methods_are_the_ones_we_adapt() -> None:
    # adapt() runs get/put/post in a gradebook thread; a new method would run unadapted
    found = [
        (pattern, target.__name__, defined_verbs(target))
        for pattern, target, *_ in handlers.default_handlers + apihandlers.default_handlers
    ]
    assert found == NBGRADER_ROUTES


def test_nbgraders_long_actions_call_the_api_methods_our_workers_run() -> None:
    called = {
        cls.__name__: re.findall(r"self\.api\.(\w+)\(", inspect.getsource(cls.post))
        for cls in ACTIONS
    }
    assert called == {cls.__name__: [method] for cls, method in ACTIONS.items()}


def test_nbgraders_settings_keys_are_the_ones_we_provide_or_make_unused() -> None:
    source = "".join(inspect.getsource(m) for m in (base, handlers, apihandlers))
    keys = set(re.findall(r"settings(?:\[|\.get\()['\"](\w+)['\"]", source))
    assert keys == {
        "nbgrader_formgrader",  # app.py: FormgraderSettings (url_prefix, debug)
        "nbgrader_jinja2_env",  # app.py: nbgrader_templates()
        "nbgrader_bad_setup",  # app.py: False
        # unused: read by members CourseAccess replaces (coursedir, gradebook, api, exporter)
        "nbgrader_authenticator",
        "nbgrader_gradebook",
        "nbgrader_exporter",
        # app.py: where our MathJax is served (read by our exporter; nbgrader's too, unused)
        "mathjax_url",
        # unused: read by FormgraderHandler, which our FormgraderRootHandler replaces
        "initial_config",
    }
    replaced = {"coursedir", "gradebook", "api", "exporter", "render", "base_url"}
    assert replaced <= set(vars(base.BaseHandler))


def test_tornado_members_nbgraders_handlers_use_are_recorded_or_only_read() -> None:
    """In a gradebook thread, nbgrader's code must only read tornado state or be recorded."""
    source = "".join(inspect.getsource(m) for m in (base, handlers, apihandlers))
    calls = set(re.findall(r"self\.(\w+)\(", source))
    calls |= set(re.findall(r"super\([^)]*\)\.(\w+)\(", source))
    assert calls & set(dir(web.RequestHandler)) == {
        # recorded by LoopResponse off the loop, made on the loop
        "clear",
        "finish",
        "redirect",
        "set_status",
        "write",
        # reads the request
        "get_argument",
        # nbgrader's render (CoursePage's replaces it); our write_error, which calls
        # set_header and finish
        "render",
        "write_error",
        # SubmissionFilesHandler's, on the loop (StudentFiles looks the file up in a thread)
        "get",
        "initialize",
    }
    assert {"clear", "finish", "redirect", "set_status", "set_header", "write"} <= set(
        vars(LoopResponse)
    )
    attributes = set(re.findall(r"self\.(\w+)\b(?!\()", source))
    # xsrf_token sets a cookie the first time: offloaded() reads it on the loop first
    assert attributes & set(dir(web.RequestHandler)) == {"settings", "xsrf_token"}


def test_nbgraders_templates_are_the_ones_we_read_with_the_marker_we_use() -> None:
    source = inspect.getsource(handlers)
    rendered = set(re.findall(r"['\"](\w+\.tpl)['\"]", source + inspect.getsource(base)))
    assert rendered == {
        "base_403.tpl",
        "base_500.tpl",
        "formgrade_404.tpl",
        "gradebook_assignments.tpl",
        "gradebook_notebook_submissions.tpl",
        "gradebook_notebooks.tpl",
        "manage_assignments.tpl",
        "manage_students.tpl",
        "manage_students_assignments.tpl",
        "manage_students_notebook_submissions.tpl",
        "manage_submissions.tpl",
    }
    pages = template_scripts().pages
    assert rendered | {GRADING_TEMPLATE} <= set(pages)
    # the grading page: nbgrader's "formgrade" nbconvert template, as its extension sets it up
    extension = inspect.getsource(formgrader)
    assert "HTMLExporter.template_name = 'formgrade'" in extension
    assert "HTMLExporter.extra_template_basedirs = [handlers.template_path]" in extension
    env = nbgrader_templates()
    assert env.loader is not None
    for name in ("base.tpl", GRADING_TEMPLATE):
        text = env.loader.get_source(env, name)[0]
        assert text.count(HEAD_END) == 1, name  # where our script goes
    # still missing from nbgrader (once it ships it, NOT_IN_NBGRADER goes)
    assert not (Path(handlers.template_path) / "formgrade_macros.tpl").exists()
    assert set(NOT_IN_NBGRADER) <= set(env.list_templates())
    # nbconvert's macro that mathjax_macro replaces (it would load MathJax from a CDN)
    for name in (GRADING_TEMPLATE, "feedback/index.html.j2"):
        assert "{{ mathjax() }}" in env.loader.get_source(env, name)[0], name


def test_the_pages_with_nbgraders_fixed_navbar_are_the_ones_grading_css_is_added_to() -> None:
    """grading.css moves the navbar below our header and undoes the body padding made for it."""
    env = nbgrader_templates()
    assert env.loader is not None
    pages = {n for n in template_scripts().pages if n.endswith(".tpl")} | {GRADING_TEMPLATE}
    fixed = {
        name
        for name in pages
        if re.search(r"navbar-fixed-top|\bnav\(resources\)", env.loader.get_source(env, name)[0])
    }
    assert fixed == FIXED_NAVBAR
    css = (Path(handlers.static_path) / "css" / "formgrade.css").read_text()
    assert re.search(r"body \{[^}]*padding-top: 70px;", css)


# -- CSP from the templates ------------------------------------------------------------------

VALUES = {
    "base_url": "/services/formgrader/course1",
    "url_prefix": "",
    "assignment_id": "ps1",
    "notebook_id": "problem1",
    "student_id": "student1",
    "course_dir": "/srv/course1",
    "default_timezone": "+0000",
    "error_code": 500,
    "resources": {  # the page for a missing submission notebook
        "base_url": "/services/formgrader/course1",
        "submission_id": "0123abcd",
        "notebook_id": "problem1",
        "assignment_id": "ps1",
        "index": 0,
        "total": 1,
        "student": "student1",
        "filename": "/srv/course1/autograded/student1/ps1/problem1.ipynb",
    },
}


@pytest.mark.parametrize(
    "template", sorted(n for n in template_scripts().pages if n.endswith(".tpl"))
)
def test_every_inline_script_of_nbgraders_pages_is_allowed(template: str) -> None:
    page = nbgrader_templates().get_template(template).render(**VALUES)
    scripts, handlers_ = template_scripts().allowed(template, VALUES)
    assert {csp_hash(s) for s in inline_scripts(page)} <= scripts
    assert {csp_hash(h) for h in event_handlers(page)} <= handlers_


def test_grading_page_allows_nbgraders_scripts_never_a_students() -> None:
    """What a student controls on the page (id, name, notebook) adds no allowed code."""
    crafted = '<img src=x onerror="steal(1)">'
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("<script>steal(2)</script><b onclick='steal(3)'>x</b>"),
            nbformat.v4.new_code_cell(
                "1",
                outputs=[
                    nbformat.v4.new_output("display_data", {"application/javascript": "steal(4)"})
                ],
            ),
        ]
    )
    resources = {
        "assignment_id": "ps1",
        "notebook_id": "problem1",
        "submission_id": "0123abcd",
        "index": 0,
        "total": 1,
        "base_url": "/services/formgrader/course1",
        "student": crafted,
        "last_name": crafted,
        "first_name": None,
        "notebook_path": "/autograded/x/ps1/problem1.ipynb",
    }
    seen: list[tuple[str, Mapping[str, Any]]] = []

    def rendered(template: str, values: Mapping[str, Any], page: str) -> str:
        seen.append((template, values))
        return page

    exporter = GradingPageExporter(Config(), rendered, mathjax_url="")
    page, _ = exporter.from_notebook_node(nb, resources=resources)
    [(template, values)] = seen
    assert template == GRADING_TEMPLATE
    scripts, handlers_ = template_scripts().allowed(template, values)

    page_scripts = {csp_hash(s) for s in inline_scripts(page)}
    page_handlers = {csp_hash(h) for h in event_handlers(page)}
    assert 'onerror="steal(1)"' in page  # nbgrader renders the name unescaped...
    # ...but only nbgrader's own code is allowed: 3 scripts (one with the page's ids), 2 handlers
    assert len(scripts & page_scripts) == 3 and len(handlers_ & page_handlers) == 2
    students = {csp_hash(f"steal({i})") for i in (1, 2, 3)}
    assert students <= page_scripts | page_handlers
    assert not students & (scripts | handlers_)
    assert not any("steal(4)" in s and csp_hash(s) in scripts for s in inline_scripts(page))


# -- responses made on the loop --------------------------------------------------------------


class Probe(LoopResponse):
    """Answers from a worker thread, as nbgrader's handler code does in the adapter."""

    executor = ThreadPoolExecutor(1)

    async def get(self, case: str) -> None:
        await self.run_off_loop(self.executor, lambda: getattr(self, case)())

    def page(self) -> None:
        self.set_status(201)
        self.set_header("X-Probe", "yes")
        self.write("one ")
        self.write("two")

    def moved(self) -> None:
        self.redirect("/elsewhere", permanent=True)

    def cleared(self) -> None:
        self.write("discarded")
        self.clear()
        self.set_status(404)
        self.write("missing")
        self.finish()

    def failed(self) -> None:
        self.write("half a page")
        raise web.HTTPError(409)


@pytest.fixture
def loop_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Which thread each of tornado's response methods runs in ("loop" or "worker")."""
    seen: list[str] = []
    loop_thread = threading.get_ident()
    for name in ("clear", "set_status", "set_header", "write", "redirect", "finish"):
        original = getattr(web.RequestHandler, name)

        def spy(self: web.RequestHandler, *args: Any, _original: Any = original) -> Any:
            seen.append("loop" if threading.get_ident() == loop_thread else "worker")
            return _original(self, *args)

        monkeypatch.setattr(web.RequestHandler, name, spy)
    yield seen


async def test_response_calls_from_a_worker_thread_are_made_on_the_loop(
    loop_threads: list[str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = HTTPServer(web.Application([(r"/(\w+)", Probe)]))
    server.listen(port, "127.0.0.1")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            page = await client.get("/page")
            moved = await client.get("/moved")
            cleared = await client.get("/cleared")
            failed = await client.get("/failed")
    finally:
        server.stop()
    assert (page.status_code, page.text, page.headers["X-Probe"]) == (201, "one two", "yes")
    assert (moved.status_code, moved.headers["Location"]) == (301, "/elsewhere")
    assert (cleared.status_code, cleared.text) == (404, "missing")
    assert failed.status_code == 409 and "half a page" not in failed.text
    assert loop_threads and set(loop_threads) == {"loop"}


def test_the_loop_response_test_can_see_a_worker_thread(loop_threads: list[str]) -> None:
    """The spy above tells threads apart: a tornado call from a worker shows as such."""

    def from_worker() -> None:
        with contextlib.suppress(AttributeError):
            web.RequestHandler.clear(object())  # type: ignore[arg-type]  # only the spy matters

    thread = threading.Thread(target=from_worker)
    thread.start()
    thread.join()
    assert loop_threads == ["worker"]
