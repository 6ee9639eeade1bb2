"""The formgrader service application: every configured course, for its graders."""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from nbgrader.server_extensions.formgrader import handlers as nbgrader_pages
from tornado.web import Application as TornadoApplication
from traitlets import Bool, Dict, Enum, Float, Integer, TraitError, Unicode, default, validate

from ..common.access import AccessRule, pattern_matches
from ..common.app import STATIC_PREFIX, HubServiceApp
from ..common.web import NotFoundHandler, Route
from .adapter import (
    CourseRuntime,
    FormgraderSettings,
    nbgrader_routes,
    nbgrader_templates,
)
from .catalog import CourseStore
from .catalogpages import Catalog, CourseRouter, catalog_handlers, course_catalog_handlers
from .courses import Course, may_grade, parse_courses, path_pattern
from .dask_executor import check_dask_settings, with_executor
from .handlers import ActionHandler, CoursesHandler, FormgraderRootHandler, course_handlers
from .jobs import Jobs, JobStore
from .lms import LmsSettings, parse_lms
from .lmspages import lms_handlers
from .mathjax import (
    LOCAL_CONFIG_DIR,
    MathJaxFiles,
    default_mathjax_dir,
    mathjax_url,
    with_feedback_template,
    write_feedback_template,
)
from .sandbox import SandboxUnavailable, check_default_sandbox, with_sandbox_settings
from .studentpages import student_handlers


class FormGrader(HubServiceApp):
    """Serves nbgrader's formgrader for every course to that course's graders and hub admins."""

    service_name: ClassVar[str] = "formgrader"
    migrations: ClassVar[str] = "hubservices.formgrader.migrations"
    title: ClassVar[str] = "Formgrader"
    default_port: ClassVar[int] = 10103
    description = __doc__

    grader_group_pattern = Unicode(
        "formgrade-{course}",
        help="Hub group whose members grade a course; {course} stands for the course id.",
    ).tag(config=True)

    @validate("grader_group_pattern", "student_group_pattern")
    def _one_course_placeholder(self, proposal: dict[str, Any]) -> str:
        pattern: str = proposal["value"]
        if pattern.count("{course}") != 1:
            raise TraitError(f"{proposal['trait'].name} must contain {{course}} exactly once")
        return pattern

    courses = Dict(
        help="""Courses served, by course id (config file):
        {"course101": {"root": "/srv/course101", "db_url": "postgresql://...",
        "exchange": "/srv/nbgrader/exchange", "timezone": "UTC", "nbgrader": {...}}}.
        db_url defaults to SQLite in the root; nbgrader holds more nbgrader config sections.""",
    ).tag(config=True)

    @validate("courses")
    def _valid_courses(self, proposal: dict[str, Any]) -> dict[str, Any]:
        courses: dict[str, Any] = proposal["value"]
        try:
            parse_courses(courses, self.exchange, self.reserved_course_ids())
        except ValueError as e:
            raise TraitError(f"courses: {e}") from None
        return courses

    def reserved_course_ids(self) -> set[str]:
        """The first path segments of the service's own routes: a course of that name would
        take over ``<prefix>metrics``, ``<prefix>static/``, ``<prefix>oauth_callback``..."""
        patterns = [path for path, *_ in self.routes()] + [STATIC_PREFIX]
        return {pattern.split("/")[0] for pattern in patterns} - {""}

    exchange = Unicode(
        "/srv/nbgrader/exchange", help="The nbgrader exchange of courses that name none."
    ).tag(config=True)

    manage_courses = Bool(
        True,
        help="""Hub admins add, retitle and retire courses on the index page and api/courses
        (creating each one's grader group on the hub: the service's role gets admin:groups),
        and graders name co-graders on the course page. Off: config-file courses only.""",
    ).tag(config=True)

    courses_dir = Unicode(
        help="Where courses added at run time get their directory (<courses_dir>/<course>)."
    ).tag(config=True)

    @default("courses_dir")
    def _default_courses_dir(self) -> str:
        return os.path.join(self.data_dir, "courses")

    lms = Dict(
        help="""LMS exports per course: {"course101": {"logins": {"hub name": "lms login"} or
        "/path/pairs.csv" (hub_name,lms_login lines), "canvas_column": "SIS Login ID" (or "ID",
        "SIS User ID"), "moodle_column": "Username" (or "Email address", "ID number")}}.
        Unmapped hub names are exported as they are.""",
    ).tag(config=True)

    @validate("lms")
    def _valid_lms(self, proposal: dict[str, Any]) -> dict[str, Any]:
        lms: dict[str, Any] = proposal["value"]
        try:
            parse_lms(lms)
        except ValueError as e:
            raise TraitError(f"lms: {e}") from None
        return lms

    max_workers = Integer(
        help="Long actions (autograde, generate, collect, feedback) run at once; others queue."
    ).tag(config=True)

    @default("max_workers")
    def _default_max_workers(self) -> int:
        return os.cpu_count() or 2

    job_timeout = Float(3600, help="Seconds before a long action is killed.").tag(config=True)

    sandbox = Dict(
        help="""Autograde's sandbox for every course (nbgrader's SandboxedExecute settings):
        {"memory_limit": 2**30, "cpu_limit": 600, "process_limit": 256, "file_size_limit":
        2**30, "wall_timeout": 600, "output_limit": 2**24, "sandbox_uid": 65534,
        "sandbox_gid": 65534, "read_only_paths": [...]}; a course's own
        {"nbgrader": {"SandboxedExecute": {...}}} overrides them.""",
    ).tag(config=True)

    allow_unsandboxed_autograde = Bool(
        False,
        help="""Where bubblewrap cannot run, autograde student code without a sandbox (it then
        sees everything the service can); each such job's result says "sandbox": "none".""",
    ).tag(config=True)

    autograde_executor = Enum(
        ["local", "dask"],
        "local",
        help="""Where autograde executes student code: "local" (a bubblewrap sandbox on this
        machine) or "dask" (a bubblewrap sandbox on a worker of the Dask cluster in ``dask``).""",
    ).tag(config=True)

    dask = Dict(
        help="""The Dask executor's settings (nbgrader's DaskExecute): {"scheduler_address":
        "tls://scheduler:8786", "security": {"tls_ca_file": ..., "tls_client_cert": ...,
        "tls_client_key": ..., "require_encryption": True}, "allow_unsandboxed": False,
        "max_files_size": 2**26, "max_result_size": 2**27, "connect_timeout": 30}; a course's
        own {"nbgrader": {"DaskExecute": {...}}} overrides them.""",
    ).tag(config=True)

    mathjax_dir = Unicode(
        help="""MathJax 2.7.7 to serve for TeX on the grading page and in feedback: the folder
        holding MathJax.js (``make`` installs it into node_modules/mathjax). Empty: no MathJax
        (TeX shows as written).""",
    ).tag(config=True)

    @default("mathjax_dir")
    def _default_mathjax_dir(self) -> str:
        return default_mathjax_dir()

    @validate("mathjax_dir")
    def _has_mathjax(self, proposal: dict[str, Any]) -> str:
        folder: str = proposal["value"]
        if folder and not (Path(folder) / "MathJax.js").is_file():
            raise TraitError(f"mathjax_dir: no MathJax.js in {folder}")
        return folder

    db_threads = Integer(
        8,
        help="""Threads for gradebook reads and writes (one database connection each), shared
        by the courses on PostgreSQL; a course on SQLite has one thread of its own.""",
    ).tag(config=True)

    def graded_courses(self, model: dict[str, Any]) -> list[str]:
        """The course ids whose grader group this user is in (configured here or not)."""
        return pattern_matches(self.grader_group_pattern, model.get("groups", []))

    def service_wide(self, model: dict[str, Any]) -> bool:
        """Whether this user grades every course (admin, ``allowed_users``/``_groups``)."""
        return super().access_rule().allows(model)

    def courses_of(self, model: dict[str, Any]) -> list[str]:
        """Courses on this user's list: all configured ones for service-wide graders."""
        if self.service_wide(model):
            return sorted(set(self.graded_courses(model)) | set(self.runtimes))
        return self.graded_courses(model)

    def may_grade_course(self, model: dict[str, Any], course_id: str) -> bool:
        return may_grade(
            model,
            course_id,
            group_pattern=self.grader_group_pattern,
            service_wide=self.service_wide(model),
        )

    def access_rule(self) -> AccessRule:
        """Service-wide graders, and the members of any course's grader group."""
        return replace(super().access_rule(), group_pattern=self.grader_group_pattern)

    def user_allowed(self, model: dict[str, Any]) -> bool:
        """Every hub user: students see their own grades here; course routes ask more."""
        return super().user_allowed(model) or model.get("kind", "user") == "user"

    student_group_pattern = Unicode(
        "{course}-students",
        help="Hub group whose members are a course's students (the course page imports them).",
    ).tag(config=True)

    upload_limit = Integer(
        20 * 2**20, help="Largest source file (bytes) an instructor may upload on the course page."
    ).tag(config=True)

    def student_group(self, course_id: str) -> str:
        return self.student_group_pattern.format(course=course_id)

    def required_scopes(self) -> list[str]:
        # users are identified through OAuth with their groups. Courses added at run time need
        # admin:groups (creating a grader group needs it; it holds `groups`, which changes
        # members, and read:groups, which reads any course's student group for its roster).
        # Without them: each configured course's student group, and no other group.
        if self.manage_courses:
            return ["admin:groups"]
        courses = parse_courses(self.courses, self.exchange)
        return [f"read:groups!group={self.student_group(course)}" for course in sorted(courses)]

    def service_handlers(self) -> list[Route]:
        routes: list[Route] = [("", CoursesHandler), *student_handlers(), *catalog_handlers()]
        if self.mathjax_dir:
            routes += [
                (
                    r"mathjax/config/local/(hubservices\.js)",
                    MathJaxFiles,
                    {"path": str(LOCAL_CONFIG_DIR)},
                ),
                ("mathjax/(.*)", MathJaxFiles, {"path": self.mathjax_dir}),
            ]
        return routes

    @property
    def mathjax_url(self) -> str:
        """Where pages load MathJax from; empty if there is none to serve."""
        return mathjax_url(self.service_prefix) if self.mathjax_dir else ""

    # -- running ----------------------------------------------------------------------------

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtimes: dict[str, CourseRuntime] = {}
        #: The courses served, by id: the jobs' view, kept in step with ``runtimes``.
        self.served: dict[str, Course] = {}
        self.config_course_ids: frozenset[str] = frozenset()
        #: Finds a course's application per request; made with the web app.
        self.course_router: CourseRouter | None = None

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        if self.autograde_executor == "dask":
            try:
                check_dask_settings(self.dask)
            except ValueError as e:
                self.log.critical("FormGrader.dask: %s", e)
                self.exit(1)

    async def on_start(self) -> None:
        """Open every course's gradebook and the job queue; resume the jobs a stop left."""
        # nbgrader runs `alembic` from PATH when it creates a gradebook
        bindir = os.path.dirname(sys.executable)
        os.environ["PATH"] = os.pathsep.join(filter(None, [bindir, os.environ.get("PATH")]))
        self.executor = ThreadPoolExecutor(self.db_threads, thread_name_prefix="gradebook")
        self.feedback_templates = Path(self.data_dir) / "nbconvert"
        write_feedback_template(self.feedback_templates, self.mathjax_url)
        self.lms_settings: dict[str, LmsSettings] = parse_lms(self.lms)
        configured = parse_courses(self.courses, self.exchange, self.reserved_course_ids())
        self.config_course_ids = frozenset(configured)
        self.catalog = Catalog(self, CourseStore(self.db))
        added = [self.catalog.course(stored.id) for stored in await self.catalog.load()]
        for parsed in [*configured.values(), *added]:
            self.serve_runtime(self.open_course(parsed))
        self.jobs = Jobs(
            JobStore(self.db), self.served, max_parallel=self.max_workers, timeout=self.job_timeout
        )
        self.log.info("Courses: %s", ", ".join(self.runtimes) or "none")
        if self.autograde_executor == "dask":
            self.log.info("Autograde executes on Dask at %s", self.dask["scheduler_address"])
            return  # each Dask worker checks its own sandbox
        try:
            check_default_sandbox()
        except SandboxUnavailable as e:
            unsandboxed = "runs UNSANDBOXED" if self.allow_unsandboxed_autograde else "is refused"
            self.log.warning("Autograde %s: %s", unsandboxed, e)
        await self.jobs.resume()

    def open_course(self, parsed: Course) -> CourseRuntime:
        """A course (config or run time) with the service's sandbox and executor, its gradebook
        open (created if new: blocking)."""
        course = with_sandbox_settings(
            parsed, self.sandbox, allow_unsandboxed=self.allow_unsandboxed_autograde
        )
        course = with_executor(course, self.autograde_executor, self.dask)
        course = with_feedback_template(course, self.feedback_templates)
        return CourseRuntime.open(course, self.executor)

    def serve_runtime(self, runtime: CourseRuntime) -> None:
        """Serve an open course: its routes (once the web app exists) and its jobs."""
        self.runtimes[runtime.course.id] = runtime
        self.served[runtime.course.id] = runtime.course
        if self.course_router is not None:
            self.course_router.apps[runtime.course.id] = self.course_app(runtime)

    def stop_serving(self, course_id: str) -> None:
        """A retired course: no route, no new job; its files and gradebook stay."""
        if self.course_router is not None:
            self.course_router.apps.pop(course_id, None)
        self.served.pop(course_id, None)
        runtime = self.runtimes.pop(course_id, None)
        if runtime is not None:
            runtime.close()

    async def on_stop(self) -> None:
        await self.jobs.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        for runtime in self.runtimes.values():
            runtime.close()

    def web_settings(self) -> dict[str, Any]:
        return {"jobs": self.jobs}

    def make_web_app(self) -> TornadoApplication:
        """Our routes, and one application per course under ``<prefix><course>/``, looked up
        per request (:class:`CourseRouter`): courses come and go while the service runs."""
        self.web_app = super().make_web_app()
        self.course_router = CourseRouter(self.service_prefix)
        for runtime in self.runtimes.values():
            self.serve_runtime(runtime)
        self.web_app.add_handlers(
            ".*$", [(f"{re.escape(self.service_prefix)}[^/]+(?:/.*)?", self.course_router)]
        )
        return self.web_app

    def course_base_pattern(self, course_id: str) -> str:
        """The regex of ``<prefix><course>``: the id may come percent-encoded (``c%2B%2B``)."""
        return re.escape(self.service_prefix) + path_pattern(course_id)

    def course_app(self, runtime: CourseRuntime) -> TornadoApplication:
        """nbgrader's formgrader and our course routes, with this course as their settings."""
        base_url = f"{self.service_prefix}{runtime.course.id}"
        base_pattern = self.course_base_pattern(runtime.course.id)
        routes = [
            *course_handlers(),
            *course_catalog_handlers(),
            *lms_handlers(),
            *nbgrader_routes(
                ActionHandler, {nbgrader_pages.FormgraderHandler: FormgraderRootHandler}
            ),
        ]
        settings = {
            key: self.web_app.settings[key]
            for key in (
                "service", "hub_auth", "cookie_secret", "templates", "static_path",
                "static_url_prefix", "compress_response", "log_function", "jobs",
            )
        }  # fmt: skip
        return TornadoApplication(
            [(f"{base_pattern}/{pattern}", handler, kwargs) for pattern, handler, kwargs in routes],
            default_handler_class=NotFoundHandler,
            base_url=base_url,
            course_runtime=runtime,
            nbgrader_formgrader=FormgraderSettings(url_prefix=""),
            nbgrader_jinja2_env=nbgrader_templates(),
            nbgrader_bad_setup=False,
            mathjax_url=self.mathjax_url,
            **settings,
        )
