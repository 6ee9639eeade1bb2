"""nbgrader's own formgrader handlers, run inside this service with hub auth, one app per course.

nbgrader's handlers (``nbgrader.server_extensions.formgrader``) derive from jupyter_server's
``JupyterHandler`` and read their course from tornado settings. Each course gets a tornado
``Application`` of its own (settings = that course) under ``<prefix><course>/``, whose handler
classes are nbgrader's with :class:`CourseAccess` mixed in front. The mixin replaces exactly what
ties them to a notebook server:

- who you are: hub OAuth (our :class:`~hubservices.common.web.BaseHandler`) instead of
  jupyter_server's identity provider, and only this course's graders get in;
- the database: nbgrader's handler methods are synchronous and query the gradebook, so each runs
  in a worker thread, in a session of its own, instead of on the event loop with one session
  shared by every request. Tornado handlers are not thread-safe: what the method does to the
  response there is recorded and done on the loop once it returns (:class:`LoopResponse`);
- the course directory and ``NbGraderAPI``: built per request from the service's config instead
  of a notebook server's config files;
- the CSP: the inline scripts of nbgrader's templates allowed by hash, the hashes taken from the
  template files (:mod:`.templatecsp`), never from a page that a student's data is rendered into.

Long actions (generate, release, collect, autograde, feedback) go to :mod:`.handlers`'s
``ActionHandler``, which runs the same NbGraderAPI method in a worker process.

What this relies on in nbgrader (its routes, handler classes, settings keys, templates) is listed
in ``tests/unit/test_formgrader_adapter.py``, which fails by name when an nbgrader release
changes any of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import numbers
import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from jinja2 import BaseLoader, ChoiceLoader, DictLoader, Environment, FileSystemLoader
from jupyterhub.services.auth import UserNotAllowed
from nbconvert.exporters import HTMLExporter
from nbformat import NotebookNode
from nbgrader.api import Gradebook
from nbgrader.apps.api import NbGraderAPI
from nbgrader.auth import Authenticator
from nbgrader.coursedir import CourseDirectory
from nbgrader.server_extensions.formgrader import apihandlers, handlers
from nbgrader.server_extensions.formgrader.base import BaseApiHandler
from tornado import web
from tornado.concurrent import Future
from traitlets.config import Config

from ..common.web import APIHandler, BaseHandler
from .courses import SANDBOX_CSP, Course, browser_safe_type, is_safe_id, page_csp
from .mathjax import mathjax_macro
from .templatecsp import TemplateScripts
from .worker import nbgrader_config

if TYPE_CHECKING:
    from .app import FormGrader

T = TypeVar("T")

#: nbgrader's page templates, and the grading page's (an nbconvert template) folder.
TEMPLATE_DIRS = (handlers.template_path, os.path.join(handlers.template_path, "formgrade"))
#: The grading page's template, as :data:`TEMPLATE_DIRS` name it.
GRADING_TEMPLATE = "formgrade/index.html.j2"
#: Where our script and header's stylesheet go in an nbgrader page: the end of its ``<head>``.
HEAD_END = "</head>"
#: Where our header goes: right after the page's ``<body>`` tag.
BODY_START = re.compile(r"<body\b[^>]*>")
#: A template nbgrader 0.9.6 lacks: its page for a missing submission notebook imports the
#: grading page's macros by this name, and answered 500.
NOT_IN_NBGRADER = {"formgrade_macros.tpl": "{% extends 'formgrade_macros.html.j2' %}"}

#: Added to every nbgrader page: nbgrader's "open in the notebook server" links point at a server
#: that is not there (``/tree/...``), so they become plain text; and, if the service has no
#: MathJax to serve, the grading page's wait for it ends at once.
OWN_STATIC = Path(__file__).parent / "static"
SHIMS = "formgrader/hubservices/shims.js"
#: nbgrader's pages whose navbar is fixed at the top, and what puts our header above it.
FIXED_NAVBAR = frozenset({GRADING_TEMPLATE, "formgrade_404.tpl"})
FIXED_NAVBAR_CSS = "formgrader/hubservices/grading.css"


def template_loader() -> BaseLoader:
    """nbgrader's templates, and what :data:`NOT_IN_NBGRADER` adds."""
    return ChoiceLoader([FileSystemLoader(TEMPLATE_DIRS), DictLoader(NOT_IN_NBGRADER)])


@functools.cache
def template_scripts() -> TemplateScripts:
    """The inline code of nbgrader's templates, read once, at startup (:func:`nbgrader_routes`)."""
    return TemplateScripts(template_loader())


@dataclass
class CourseRuntime:
    """A course as the service runs it: nbgrader config, one database engine, its threads."""

    course: Course
    config: Config
    gradebook: Gradebook
    #: Where the course's gradebook calls run.
    executor: Executor
    owns_executor: bool
    #: Changes are taken in the order they arrive (see :meth:`CourseAccess.prepare`).
    arrivals: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def open(cls, course: Course, shared: Executor) -> CourseRuntime:
        """Connect to (and if new, create) the course's gradebook.

        A SQLite gradebook gets one thread of its own instead of the ``shared`` pool: SQLite
        lets one connection write at a time anyway, and connections that wait for each other
        sleep in SQLite's busy handler (up to 100 ms a time), which made concurrent graders
        slower than taking their calls one by one.
        """
        course.root.mkdir(parents=True, exist_ok=True)
        gradebook = Gradebook(course.db_url, course.id)
        own = gradebook.engine.dialect.name == "sqlite"
        executor = ThreadPoolExecutor(1, f"gradebook-{course.id}") if own else shared
        return cls(course, nbgrader_config(course), gradebook, executor, own)

    def close(self) -> None:
        if self.owns_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.gradebook.close()


class CourseAPI(NbGraderAPI):  # type: ignore[misc]  # nbgrader ships no type information
    """NbGraderAPI on the course's engine: nbgrader's opens and disposes one per call."""

    def __init__(self, runtime: CourseRuntime, coursedir: CourseDirectory) -> None:
        super().__init__(coursedir, Authenticator(config=runtime.config), config=runtime.config)
        self._gradebook = runtime.gradebook

    @property
    def gradebook(self) -> contextlib.nullcontext[Gradebook]:
        # nbgrader uses ``with self.gradebook as gb``; the session ends with the request
        return contextlib.nullcontext(self._gradebook)

    def get_submitted_students(self, assignment_id: str) -> set[str]:
        """Students from ``submitted/``'s directory names: only valid ids, as in a URL.

        Every page and action that lists submissions from disk goes through here, so a name
        like ``<img src=x onerror=...>`` is never rendered or graded (the course page lists it).
        """
        return {s for s in super().get_submitted_students(assignment_id) if is_safe_id(s)}


@dataclass
class FormgraderSettings:
    """What nbgrader's handlers read from ``settings['nbgrader_formgrader']``."""

    url_prefix: str
    #: nbgrader would show its whole config, database URL (and password) included.
    debug: bool = False


#: A response method's name and the arguments it was called with.
ResponseCall = tuple[str, tuple[Any, ...], dict[str, Any]]
#: What tornado's ``set_header`` takes.
HeaderValue = bytes | str | int | numbers.Integral | datetime.datetime


class LoopResponse(web.RequestHandler):
    """A handler whose code may run in a worker thread while its response is made on the loop.

    Tornado handlers are not thread-safe. In the thread that :meth:`run_off_loop` starts, the
    public methods that make a response (the ones nbgrader's handlers call) are recorded instead;
    they are called, in the same order, on the loop once the thread is done. If the code raises,
    nothing it recorded is made: tornado answers with the error, as for any handler. The thread
    may read the request and the settings, which nothing changes while it runs.
    """

    #: The worker thread that runs this request's code, while it does.
    _response_worker: int | None = None
    _response_calls: list[ResponseCall]
    _response_made: Future[None]

    def off_loop(self) -> bool:
        """Whether this is the worker thread, whose response calls are recorded."""
        return self._response_worker == threading.get_ident()

    async def run_off_loop(self, executor: Executor, call: Callable[[], None]) -> None:
        """``call()`` in ``executor``; then what it did to the response, here on the loop."""
        loop = asyncio.get_running_loop()
        self._response_calls = []
        # what a recorded finish() returns: done once the response is made
        self._response_made = loop.create_future()
        await loop.run_in_executor(executor, self._record_during, call)
        for name, args, kwargs in self._response_calls:
            getattr(self, name)(*args, **kwargs)
        self._response_made.set_result(None)

    def _record_during(self, call: Callable[[], None]) -> None:
        self._response_worker = threading.get_ident()
        try:
            call()
        finally:
            self._response_worker = None

    def _record_call(self, name: str, *args: Any, **kwargs: Any) -> None:
        self._response_calls.append((name, args, kwargs))

    def clear(self) -> None:
        if self.off_loop():
            self._record_call("clear")
        else:
            super().clear()

    def set_status(self, status_code: int, reason: str | None = None) -> None:
        if self.off_loop():
            self._record_call("set_status", status_code, reason)
        else:
            super().set_status(status_code, reason)

    def set_header(self, name: str, value: HeaderValue) -> None:
        if self.off_loop():
            self._record_call("set_header", name, value)
        else:
            super().set_header(name, value)

    def write(self, chunk: str | bytes | dict[Any, Any]) -> None:
        if self.off_loop():
            self._record_call("write", chunk)
        else:
            super().write(chunk)

    def redirect(self, url: str, permanent: bool = False, status: int | None = None) -> None:
        if self.off_loop():
            self._record_call("redirect", url, permanent, status)
        else:
            super().redirect(url, permanent, status)

    def finish(self, chunk: str | bytes | dict[Any, Any] | None = None) -> Future[None]:
        if self.off_loop():
            self._record_call("finish", chunk)
            return self._response_made
        return super().finish(chunk)


class CourseAccess(LoopResponse, BaseHandler):
    """Hub auth for one course, nbgrader's course objects per request, its code off the loop."""

    @property
    def runtime(self) -> CourseRuntime:
        runtime: CourseRuntime = self.settings["course_runtime"]
        return runtime

    @property
    def course(self) -> Course:
        return self.runtime.course

    def check_hub_user(self, model: dict[str, Any]) -> dict[str, Any]:
        """Allowed in the service, and a grader of this course (checked on every request)."""
        model = super().check_hub_user(model)
        if not cast("FormGrader", self.service).may_grade_course(model, self.course.id):
            raise UserNotAllowed(model)
        return model

    @property
    def course_url(self) -> str:
        """The course page (``<prefix><course>/``), where every page of the course links."""
        return f"{self.service.service_prefix}{self.course.id}/"

    @property
    def nav(self) -> list[tuple[str, str]]:
        """The header's places for a course's pages: all courses, this course's page."""
        return [
            ("Courses", self.service.service_prefix),
            (f"Course {self.course.id}", self.course_url),
        ]

    def denied_message(self) -> str:
        model = getattr(self, "_cached_hub_user", None)
        if model:
            return f"{model.get('name')} does not grade {self.course.id}."
        return "Authentication required."

    async def identify(self) -> None:
        """Ask the hub who this is without blocking the loop, and set tornado's user.

        What ``HubAuthenticated.get_current_user`` decides, from the model fetched here: left
        to it, ``@web.authenticated`` would fetch the model again through HubAuth's one
        background thread, blocking the caller (the loop, or a gradebook thread) while the
        threads hand the GIL around. Someone not allowed gets a 403 from ``get_login_url``.
        """
        model = await self.hub_auth.get_user(self, sync=False)
        try:
            self.current_user = self.check_hub_user(model) if model else None
        except UserNotAllowed:
            self.current_user = None

    async def prepare(self) -> None:
        """Who this is (replaces jupyter_server's identity provider); no unsafe ids in the path.

        A grader's page saves a score, then its extra credit, in two requests sent at once,
        each with the whole grade: identified in turn (a FIFO lock), they reach the gradebook
        thread in the order they arrived, as they do in nbgrader's single-threaded server;
        otherwise the first can overwrite the second.
        """
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            await self.identify()
        else:
            async with self.runtime.arrivals:
                await self.identify()
        for value in [*self.path_args, *self.path_kwargs.values()]:
            if not is_safe_id(value):
                raise web.HTTPError(400, f"{value!r} is not a valid id")

    # -- nbgrader's objects, per request ----------------------------------------------------

    @functools.cached_property
    def coursedir(self) -> CourseDirectory:
        # per request: NbGraderAPI sets assignment_id/student_id on it while it works
        return CourseDirectory(config=self.runtime.config)

    @property
    def gradebook(self) -> Gradebook:
        return self.runtime.gradebook

    @property
    def api(self) -> NbGraderAPI:
        return CourseAPI(self.runtime, self.coursedir)

    # -- nbgrader's synchronous code, off the event loop ------------------------------------

    def in_request_session(self, call: Callable[[], T]) -> T:
        """``call()`` in a database session of its own, ended (and rolled back) after it."""
        try:
            return call()
        finally:
            self.gradebook.db.remove()

    async def in_gradebook_thread(self, call: Callable[[], None]) -> None:
        """``call()`` in one of the course's gradebook threads, its response made on the loop."""
        await self.run_off_loop(self.runtime.executor, lambda: self.in_request_session(call))


def offloaded(method: Callable[..., None]) -> Callable[..., Any]:
    """An nbgrader handler method as a coroutine that runs it in a gradebook thread.

    Who the user is and their XSRF cookie are settled first, on the loop: nbgrader's own
    ``@web.authenticated`` and ``check_xsrf`` then only read them.
    """

    @web.authenticated
    @functools.wraps(method)
    async def run(self: CourseAccess, *args: str, **kwargs: str) -> None:
        _ = self.xsrf_token  # sets the cookie if this browser has none yet
        await self.in_gradebook_thread(functools.partial(method, self, *args, **kwargs))

    return run


#: Told what a page was rendered from: (template, values, page) -> the page to send.
Rendered = Callable[[str, Mapping[str, Any], str], str]


class GradingPageExporter(HTMLExporter):
    """nbgrader's grading-page exporter, with our MathJax (:mod:`.mathjax`) instead of a
    CDN's, telling ``rendered`` its pages."""

    def __init__(self, config: Config, rendered: Rendered, mathjax_url: str) -> None:
        super().__init__(  # type: ignore[no-untyped-call]  # nbconvert's Exporter.__init__ has no annotations
            config=config,
            template_name="formgrade",
            extra_template_basedirs=[handlers.template_path],
            extra_loaders=[DictLoader({"mathjax.html.j2": mathjax_macro(mathjax_url)})],
        )
        self.rendered = rendered

    def from_notebook_node(  # type: ignore[override]  # as HTMLExporter's: a page, not a notebook
        self, nb: NotebookNode, resources: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[str, dict[str, Any]]:
        html, resources = super().from_notebook_node(nb, resources, **kw)
        return self.rendered(GRADING_TEMPLATE, {"resources": resources}, html), resources


class CoursePage(CourseAccess):
    """An nbgrader page: its template's inline code allowed by hash, our script added."""

    #: Hashes of the inline scripts and event handlers of the templates this page rendered.
    allowed_code: tuple[frozenset[str], frozenset[str]] | None = None

    def render(self, template_name: str, **namespace: Any) -> str:  # type: ignore[override]  # nbgrader's render returns the page for its handler to write; tornado's would finish
        """nbgrader's ``render`` (its template, from the environment in the settings)."""
        template = self.settings["nbgrader_jinja2_env"].get_template(template_name)
        return self.rendered(template_name, namespace, template.render(**namespace))

    @property
    def exporter(self) -> GradingPageExporter:
        return GradingPageExporter(self.runtime.config, self.rendered, self.settings["mathjax_url"])

    def rendered(self, template: str, values: Mapping[str, Any], page: str) -> str:
        """``page``, rendered from ``template`` with ``values``: note its code; add our script,
        header and styles (after nbgrader's, which they override)."""
        scripts, event_handlers = template_scripts().allowed(template, values)
        if self.allowed_code:
            scripts |= self.allowed_code[0]
            event_handlers |= self.allowed_code[1]
        self.allowed_code = frozenset(scripts), frozenset(event_handlers)
        base = self.settings["base_url"]
        head = (
            f'<link rel="stylesheet" href="{self.static_url("header.css")}">'
            f'<script src="{base}/{SHIMS}"></script>'
        )
        if template in FIXED_NAVBAR:
            head += f'<link rel="stylesheet" href="{base}/{FIXED_NAVBAR_CSS}">'
        page = page.replace(HEAD_END, head + HEAD_END, 1)
        body = BODY_START.search(page)
        return page if body is None else page[: body.end()] + self.header() + page[body.end() :]

    def header(self) -> str:
        """Our header (``header.html``, as on our own pages) for the top of nbgrader's page."""
        template = self.templates.get_template("header.html")
        return template.render(
            service=self.service,
            prefix=self.service.service_prefix,
            user=self.current_user,
            xsrf_token=self.xsrf_token.decode(),
            hub_url=self.hub_auth.hub_prefix,
            nav=self.nav,
        )

    def finish(self, chunk: str | bytes | dict[Any, Any] | None = None) -> Future[None]:
        if self.allowed_code and not self.off_loop():
            self.set_header("Content-Security-Policy", page_csp(*self.allowed_code))
        return super().finish(chunk)


class CourseAPIAccess(CourseAccess, APIHandler):
    """An nbgrader API route: JSON errors, 403 JSON instead of a login redirect."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # nbgrader's scripts JSON.parse the answer themselves: a string for jQuery, as nbgrader's
        # own server's text/html is, but one no browser renders
        self.set_header("Content-Type", "text/plain; charset=UTF-8")

    def get_json_body(self) -> dict[str, Any]:
        """The body as the JSON object nbgrader's handlers ``.get()`` from, or a 400 saying so.

        nbgrader's own answers a missing body with ``None`` (then a 500 from ``None.get``) and
        logs a traceback for one that is not JSON.
        """
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "The request body must be a JSON object.")
        return body


@web.authenticated
def _require_user(handler: web.RequestHandler) -> None:
    """Nothing: what ``@web.authenticated`` does first (anonymous browsers go to log in)."""


class CourseFiles(CourseAccess, web.StaticFileHandler):
    """nbgrader's static assets, for this course's graders only."""

    async def prepare(self) -> None:
        # the path is a file path, not an id: StaticFileHandler keeps it inside its root
        await self.identify()
        _require_user(self)

    def check_xsrf_cookie(self) -> None:
        """Fonts load in CORS mode, without a token; reading a file changes nothing."""
        if self.request.method not in {"GET", "HEAD"}:
            super().check_xsrf_cookie()


#: What nbgrader's ``SubmissionFilesHandler`` splits a path into: submission id, file.
SUBMISSION_FILE = re.compile(r"([^/]+)/(.*)")


class StudentFiles(CourseFiles):
    """A file of a student's autograded submission: sandboxed, never served as script."""

    #: The file, as nbgrader finds it from the gradebook (in a gradebook thread).
    file_path = ""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", SANDBOX_CSP)

    def get_content_type(self) -> str:
        return browser_safe_type(super().get_content_type())

    async def get(self, path: str, include_body: bool = True) -> None:
        loop = asyncio.get_running_loop()
        find = functools.partial(self.in_request_session, functools.partial(self.find, path))
        self.file_path = await loop.run_in_executor(self.runtime.executor, find)
        await super().get(path, include_body)

    def find(self, url_path: str) -> str:
        """nbgrader's ``parse_url_path``: the submission's file, from the gradebook.

        nbgrader's raises (a 500) on a path without ``<submission id>/``, as ``submissions/``.
        """
        if not SUBMISSION_FILE.match(url_path.lstrip("/")):
            raise web.HTTPError(404, "No file: submissions/<submission id>/<file> expected.")
        return super().parse_url_path(url_path)

    def parse_url_path(self, url_path: str) -> str:
        return self.file_path


def adapt(nbgrader_class: type[web.RequestHandler]) -> type[web.RequestHandler]:
    """nbgrader's handler class with hub auth, per-request course objects and threads."""
    if issubclass(nbgrader_class, handlers.SubmissionFilesHandler):
        base: type[CourseAccess] = StudentFiles
        verbs = {}
    else:
        base = CourseAPIAccess if issubclass(nbgrader_class, BaseApiHandler) else CoursePage
        verbs = {
            verb: offloaded(getattr(nbgrader_class, verb))
            for verb in ("get", "put", "post")
            if verb in nbgrader_class.__dict__
        }
    adapted = type(nbgrader_class.__name__, (base, nbgrader_class), verbs)
    return cast(type[web.RequestHandler], adapted)


def nbgrader_templates() -> Environment:
    """nbgrader's page templates, as its extension loads them (plus :data:`NOT_IN_NBGRADER`)."""
    return Environment(loader=template_loader())


#: nbgrader's long-action handlers, and the NbGraderAPI method each calls.
ACTIONS = {
    apihandlers.AssignHandler: "generate_assignment",
    apihandlers.UnReleaseHandler: "unrelease",
    apihandlers.ReleaseHandler: "release_assignment",
    apihandlers.CollectHandler: "collect",
    apihandlers.AutogradeHandler: "autograde",
    apihandlers.GenerateAllFeedbackHandler: "generate_feedback",
    apihandlers.ReleaseAllFeedbackHandler: "release_feedback",
    apihandlers.GenerateFeedbackHandler: "generate_feedback",
    apihandlers.ReleaseFeedbackHandler: "release_feedback",
}

Route = tuple[str, type[web.RequestHandler], dict[str, Any]]


def nbgrader_routes(
    action_handler: type[web.RequestHandler],
    replaced: Mapping[type[web.RequestHandler], type[web.RequestHandler]],
) -> list[Route]:
    """nbgrader's routes (relative to the course), its handlers adapted, moved or replaced.

    Long actions go to ``action_handler`` (which runs the NbGraderAPI method in a worker);
    ``replaced`` maps other nbgrader handlers to ours. Reads nbgrader's templates' scripts now,
    so that templates this service cannot vouch for stop it at startup, not at a request.
    """
    template_scripts()
    routes: list[Route] = []
    for pattern, target, *rest in handlers.default_handlers + apihandlers.default_handlers:
        kwargs: dict[str, Any] = dict(rest[0]) if rest else {}
        if target in ACTIONS:
            target, kwargs = action_handler, {"action": ACTIONS[target]}
        elif target in replaced:
            target = replaced[target]
        elif target is web.StaticFileHandler:
            target = CourseFiles
        else:
            target = adapt(target)
        routes.append((pattern.lstrip("/"), target, kwargs))
    routes += [
        ("formgrader/static/(.*)", CourseFiles, {"path": handlers.static_path}),
        ("formgrader/hubservices/(.*)", CourseFiles, {"path": str(OWN_STATIC)}),
    ]
    return routes
