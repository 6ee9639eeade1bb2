"""nbgrader's own formgrader handlers, run inside this service with hub auth, one app per course.

nbgrader's handlers (``nbgrader.server_extensions.formgrader``) derive from jupyter_server's
``JupyterHandler`` and read their course from tornado settings. Each course gets a tornado
``Application`` of its own (settings = that course) under ``<prefix><course>/``, whose handler
classes are nbgrader's with :class:`CourseAccess` mixed in front. The mixin replaces exactly what
ties them to a notebook server:

- who you are: hub OAuth (our :class:`~hubservices.common.web.BaseHandler`) instead of
  jupyter_server's identity provider, and only this course's graders get in;
- the database: a session per request on one engine per course, in a worker thread, instead of
  one session shared by every request on the event loop;
- the course directory and ``NbGraderAPI``: built per request from the service's config instead
  of a notebook server's config files;
- the CSP: nbgrader's inline scripts allowed by hash, nothing else (see ``courses.page_csp``).

Long actions (generate, release, collect, autograde, feedback) go to :mod:`.handlers`'s
``ActionHandler``, which runs the same NbGraderAPI method in a worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import DictLoader, Environment, FileSystemLoader
from jupyterhub.services.auth import UserNotAllowed
from nbconvert.exporters import HTMLExporter
from nbgrader.api import Gradebook
from nbgrader.apps.api import NbGraderAPI
from nbgrader.auth import Authenticator
from nbgrader.coursedir import CourseDirectory
from nbgrader.server_extensions.formgrader import apihandlers, handlers
from nbgrader.server_extensions.formgrader.base import BaseApiHandler
from tornado import web
from traitlets.config import Config

from ..common.web import APIHandler, BaseHandler
from .courses import (
    SANDBOX_CSP,
    Course,
    browser_safe_type,
    event_handler_hashes,
    inline_script_hashes,
    is_safe_id,
    page_csp,
    trusted_part,
)
from .worker import nbgrader_config

if TYPE_CHECKING:
    from .app import FormGrader

#: Where a rendered submission's student content starts (nbgrader's formgrade template).
NOTEBOOK_CONTAINER = '<div class="container" id="notebook-container">'

#: No CDN: MathJax is not shipped with nbgrader, so the grading page loads none (TeX shows as
#: source). Overrides nbconvert's ``mathjax`` macro, whose default is a CDN URL.
NO_MATHJAX = {"mathjax.html.j2": "{%- macro mathjax(url='') -%}{%- endmacro -%}"}

#: Added to every nbgrader page: nbgrader's "open in the notebook server" links point at a server
#: that is not there (``/tree/...``), so they become plain text; and the grading page's wait for
#: MathJax, which is not loaded, ends at once.
OWN_STATIC = Path(__file__).parent / "static"
SHIMS = "formgrader/hubservices/shims.js"


@dataclass
class CourseRuntime:
    """A course as the service runs it: nbgrader config, one database engine, its threads."""

    course: Course
    config: Config
    gradebook: Gradebook
    #: Where the course's gradebook calls run.
    executor: Executor
    owns_executor: bool

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


class CourseAPI(NbGraderAPI):
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


class CourseAccess(BaseHandler):
    """Hub auth for one course, and nbgrader's course objects per request."""

    @property
    def runtime(self) -> CourseRuntime:
        return self.settings["course_runtime"]

    @property
    def course(self) -> Course:
        return self.runtime.course

    def check_hub_user(self, model: dict[str, Any]) -> dict[str, Any]:
        """Allowed in the service, and a grader of this course (checked on every request)."""
        model = super().check_hub_user(model)
        service: FormGrader = self.service
        if not service.may_grade_course(model, self.course.id):
            raise UserNotAllowed(model)
        return model

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
        """Who this is (replaces jupyter_server's identity provider); no unsafe ids in the path."""
        await self.identify()
        for value in self.path_args:
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

    @property
    def exporter(self) -> HTMLExporter:
        """nbgrader's grading-page exporter, without CDN MathJax."""
        return HTMLExporter(
            config=self.runtime.config,
            template_name="formgrade",
            extra_template_basedirs=[handlers.template_path],
            extra_loaders=[DictLoader(NO_MATHJAX)],
        )

    # -- running nbgrader's synchronous methods off the event loop --------------------------

    _in_thread = False

    def in_request_session(self, method: Callable[..., Any], *args: Any) -> None:
        """Run an nbgrader method in this thread, in a database session of its own."""
        self._in_thread = True
        try:
            method(self, *args)
        finally:
            self._in_thread = False
            self.gradebook.db.remove()  # ends (and rolls back anything left of) the session

    def finish(self, chunk: Any = None) -> Any:
        """In the worker thread, leave the finish (a redirect's) to tornado on the loop."""
        if self._in_thread:
            if chunk is not None:
                self.write(chunk)
            return None
        return super().finish(chunk)


def offloaded(method: Callable[..., Any]) -> Callable[..., Any]:
    """An nbgrader handler method as a coroutine that runs it in the service's thread pool."""

    @functools.wraps(method)
    async def run(self: CourseAccess, *args: Any) -> None:
        loop = asyncio.get_running_loop()
        call = functools.partial(self.in_request_session, method, *args)
        await loop.run_in_executor(self.runtime.executor, call)

    return run


class CoursePage(CourseAccess):
    """An nbgrader page: its inline scripts allowed by hash; our link script added."""

    #: Where the student's HTML starts on a rendered submission: no script after it runs.
    student_content_marker: str | None = None

    def finish(self, chunk: Any = None) -> Any:
        if self._in_thread or not self._write_buffer or self.get_status() >= 400:
            return super().finish(chunk)
        page = b"".join(self._write_buffer).decode()
        script = f'<script src="{self.base_url}/{SHIMS}"></script>'
        page = page.replace("</head>", script + "</head>", 1)
        self._write_buffer = [page.encode()]
        trusted = trusted_part(page, self.student_content_marker)
        self.set_header(
            "Content-Security-Policy",
            page_csp(inline_script_hashes(trusted), event_handler_hashes(trusted)),
        )
        return super().finish(chunk)


class SubmissionPage(CoursePage):
    student_content_marker = NOTEBOOK_CONTAINER


class CourseAPIAccess(CourseAccess, APIHandler):
    """An nbgrader API route: JSON errors, 403 JSON instead of a login redirect."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "application/json; charset=UTF-8")


class CourseFiles(CourseAccess, web.StaticFileHandler):
    """nbgrader's static assets, for this course's graders only."""

    async def prepare(self) -> None:
        # the path is a file path, not an id: StaticFileHandler keeps it inside its root
        await self.identify()

    def check_xsrf_cookie(self) -> None:
        """Fonts load in CORS mode, without a token; reading a file changes nothing."""
        if self.request.method not in {"GET", "HEAD"}:
            super().check_xsrf_cookie()

    @web.authenticated
    def get(self, path: str, include_body: bool = True) -> Any:
        return super().get(path, include_body)


class StudentFiles(CourseFiles):
    """A file of a student's autograded submission: sandboxed, never served as script."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", SANDBOX_CSP)

    def get_content_type(self) -> str:
        return browser_safe_type(super().get_content_type())

    def parse_url_path(self, url_path: str) -> str:
        # nbgrader looks the submission up in the gradebook, here on the loop thread
        try:
            return super().parse_url_path(url_path)
        finally:
            self.gradebook.db.remove()


def adapt(nbgrader_class: type) -> type:
    """nbgrader's handler class with hub auth, per-request course objects and threads."""
    if issubclass(nbgrader_class, handlers.SubmissionFilesHandler):
        return type(nbgrader_class.__name__, (StudentFiles, nbgrader_class), {})
    if issubclass(nbgrader_class, BaseApiHandler):
        base: type = CourseAPIAccess
    elif nbgrader_class is handlers.SubmissionHandler:
        base = SubmissionPage
    else:
        base = CoursePage
    verbs = {
        verb: offloaded(getattr(nbgrader_class, verb))
        for verb in ("get", "put", "post")
        if verb in nbgrader_class.__dict__
    }
    return type(nbgrader_class.__name__, (base, nbgrader_class), verbs)


def nbgrader_templates() -> Environment:
    """nbgrader's page templates, as its extension loads them."""
    return Environment(loader=FileSystemLoader([handlers.template_path]))


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


def nbgrader_routes(
    action_handler: type, replaced: dict[type, type]
) -> list[tuple[str, type, dict[str, Any]]]:
    """nbgrader's routes (relative to the course), its handlers adapted, moved or replaced.

    Long actions go to ``action_handler`` (which runs the NbGraderAPI method in a worker);
    ``replaced`` maps other nbgrader handlers to ours.
    """
    routes = []
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
