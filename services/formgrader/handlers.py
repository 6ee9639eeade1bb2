"""The formgrader's own routes: course list and page, long actions, jobs, grade exports."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from jinja2 import DictLoader
from nbconvert.exporters import HTMLExporter
from nbgrader.coursedir import CourseDirectory
from tornado.web import HTTPError, authenticated

from ..common.hubapi import HubAPIError
from ..common.web import BaseHandler, Setting
from .adapter import CourseAccess, CourseAPIAccess
from .authoring import (
    BadUpload,
    Student,
    check_upload,
    roster_from_csv,
    roster_from_group,
    source_assignments,
    source_file,
    source_files,
)
from .courses import SANDBOX_CSP, is_safe_id
from .export import SafeCsvExportPlugin
from .jobs import Jobs, Submitted, job_to_dict
from .mathjax import mathjax_macro
from .studentpages import FEEDBACK_FRAMES_CSP, grades_of

if TYPE_CHECKING:
    from .app import FormGrader

#: Our routes' action names, and the NbGraderAPI method (``worker.ACTIONS``) each runs.
ASSIGNMENT_ACTIONS = {
    "generate": "generate_assignment",
    "release": "release_assignment",
    "unrelease": "unrelease",
    "collect": "collect",
    "generate_feedback": "generate_feedback",
    "release_feedback": "release_feedback",
}
SUBMISSION_ACTIONS = {
    "autograde": "autograde",
    "generate_feedback": "generate_feedback",
    "release_feedback": "release_feedback",
}


def unsafe_submissions(coursedir: CourseDirectory) -> list[tuple[str, str]]:
    """(student, assignment) directories under ``submitted/`` whose names are not valid ids.

    Such a name never reaches a URL, a grader's page or a worker: a student id like
    ``<img src=x onerror=...>`` or ``=cmd|x`` is skipped, and the course page says so.
    """
    submitted = Path(coursedir.root) / coursedir.submitted_directory
    if not submitted.is_dir():
        return []
    found = []
    for student in sorted(submitted.iterdir()):
        if not student.is_dir():
            continue
        for assignment in sorted(student.iterdir()):
            if assignment.is_dir() and not (
                is_safe_id(student.name) and is_safe_id(assignment.name)
            ):
                found.append((student.name, assignment.name))
    return found


class CoursesHandler(BaseHandler):
    """``/``: the courses this user grades, with links to each, and their own grades."""

    @authenticated
    async def get(self) -> None:
        service = cast("FormGrader", self.service)
        graded = service.courses_of(self.current_user)
        manages = service.manage_courses and bool(self.current_user.get("admin"))
        self.set_header("Content-Security-Policy", FEEDBACK_FRAMES_CSP)
        self.render_page(
            "index.html",
            courses=[c for c in graded if c in service.runtimes],
            unconfigured=[c for c in graded if c not in service.runtimes],
            grades=await grades_of(service, self.current_user["name"]),
            catalog=service.catalog.listing() if manages else None,
        )


class CourseHandler(CourseAccess):
    """``<course>/``: the way into nbgrader's pages, grade exports, and the course's jobs.

    Jobs and their progress are drawn by ``static/course.js`` from ``api/jobs``.
    """

    @authenticated
    async def get(self) -> None:
        loop = asyncio.get_running_loop()
        graded, students = await loop.run_in_executor(
            self.runtime.executor, self.in_request_session, self._gradebook_view
        )
        unsafe = await loop.run_in_executor(None, unsafe_submissions, self.coursedir)
        drafts = await loop.run_in_executor(None, source_assignments, self.course.root)
        service = cast("FormGrader", self.service)
        self.render_page(
            "course.html",
            course=self.course,
            base=self.course_url,
            assignments=sorted(set(graded) | set(drafts)),
            students=students,
            student_group=service.student_group(self.course.id),
            upload_limit=service.upload_limit,
            unsafe=unsafe,
            nav=self.nav,
        )

    def _gradebook_view(self) -> tuple[list[str], list[dict[str, str]]]:
        """The gradebook's assignments, and its students as the roster shows them."""
        assignments = [a.name for a in self.gradebook.assignments]
        students = [
            {
                "id": s.id,
                "first_name": s.first_name or "",
                "last_name": s.last_name or "",
                "email": s.email or "",
            }
            for s in sorted(self.gradebook.students, key=lambda s: s.id)
            if is_safe_id(s.id)
        ]
        return assignments, students


class FormgraderRootHandler(CourseAccess):
    """``<course>/formgrader``: to nbgrader's first page (nbgrader's own reloads its config)."""

    @authenticated
    def get(self) -> None:
        self.redirect(
            f"{self.service.service_prefix}{self.course.id}/formgrader/manage_assignments"
        )


class ActionHandler(CourseAPIAccess):
    """nbgrader's long-action routes (``.../assign``, ``/collect``, ``/autograde``...).

    Same URL and answer as nbgrader's (its page waits for ``{success, log, error}``), but the
    NbGraderAPI call is a job run in a worker process (``jobs.Jobs``), so the loop keeps
    serving everyone else meanwhile, and a job already active for the same ids is joined.
    """

    jobs = Setting(Jobs)

    def initialize(self, action: str) -> None:
        self.action = action

    @authenticated
    async def post(self, *ids: str) -> None:
        result = await self.jobs.run(self.course, self.action, list(ids), self.current_user["name"])
        # nbgrader's page JSON.parse()s the answer itself: as JSON, jQuery would hand it an
        # object already, and the page would show nothing; nbgrader answers it as text
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(json.dumps(result))


class JobsAPI(CourseAPIAccess):
    """Jobs asked for on our own routes: queued at once, answered 202 with their ids."""

    jobs = Setting(Jobs)

    def accepted(self, submitted: Submitted, **more: Any) -> None:
        location = f"{self.service.service_prefix}{self.course.id}/api/batches/{submitted.batch}"
        self.set_header("Location", location)
        self.write_json({"batch": submitted.batch, "jobs": submitted.jobs, **more}, 202)

    async def queue(self, action: str, batch: list[list[str]]) -> Submitted:
        return await self.jobs.submit(self.course, action, batch, self.current_user["name"])


class AutogradeAllHandler(JobsAPI):
    """``POST <course>/api/assignment/<id>/autograde``: a batch, one job per submission.

    Answers at once: the batch id, each student's job id, and the submissions skipped because
    their directory's name is not a valid id. ``max_workers`` workers grade the batch, each
    student after student.
    """

    @authenticated
    async def post(self, assignment_id: str) -> None:
        loop = asyncio.get_running_loop()
        # CourseAPI lists valid ids only; the invalid ones are reported, never graded
        students = sorted(
            await loop.run_in_executor(None, self.api.get_submitted_students, assignment_id)
        )
        unsafe = await loop.run_in_executor(None, unsafe_submissions, self.coursedir)
        submitted = await self.queue("autograde", [[assignment_id, s] for s in students])
        self.accepted(
            submitted,
            students=dict(zip(students, submitted.jobs, strict=True)),
            skipped=[student for student, assignment in unsafe if assignment == assignment_id],
        )


class AssignmentActionHandler(JobsAPI):
    """``POST <course>/api/assignment/<id>/<action>``: generate, release, collect, feedback."""

    @authenticated
    async def post(self, assignment_id: str, action: str) -> None:
        self.accepted(await self.queue(ASSIGNMENT_ACTIONS[action], [[assignment_id]]))


class SubmissionActionHandler(JobsAPI):
    """``POST <course>/api/submission/<assignment>/<student>/<action>``: one submission."""

    @authenticated
    async def post(self, assignment_id: str, student_id: str, action: str) -> None:
        self.accepted(await self.queue(SUBMISSION_ACTIONS[action], [[assignment_id, student_id]]))


class JobsHandler(JobsAPI):
    """``GET <course>/api/jobs``: this course's latest jobs and batches, with progress."""

    @authenticated
    async def get(self) -> None:
        self.write_json(await self.jobs.recent(self.course))


class JobHandler(JobsAPI):
    """``GET <course>/api/jobs/<id>``: one job, nbgrader's log included."""

    @authenticated
    async def get(self, job_id: str) -> None:
        job = await self.jobs.job(self.course, int(job_id))
        if job is None:
            raise HTTPError(404, f"No job {job_id} in {self.course.id}.")
        self.write_json(job_to_dict(job, with_log=True))


class BatchHandler(JobsAPI):
    """``GET <course>/api/batches/<id>``: done of total, and each failure with its reason."""

    @authenticated
    async def get(self, batch_id: str) -> None:
        self.write_json(await self.found(batch_id))

    async def found(self, batch_id: str) -> dict[str, Any]:
        batch = await self.jobs.batch(self.course, int(batch_id))
        if batch is None:
            raise HTTPError(404, f"No batch {batch_id} in {self.course.id}.")
        return batch


class CancelBatchHandler(BatchHandler):
    """``POST <course>/api/batches/<id>/cancel``: its queued jobs never run, running ones die."""

    @authenticated
    async def post(self, batch_id: str) -> None:
        if not await self.jobs.cancel(self.course, int(batch_id), self.current_user["name"]):
            raise HTTPError(404, f"No batch {batch_id} in {self.course.id}.")
        self.write_json(await self.found(batch_id))


class SourceFilesHandler(JobsAPI):
    """``<course>/api/assignment/<id>/source``: the assignment's source files (GET), or more of
    them uploaded (POST, multipart ``file`` fields; a file of the same name is replaced)."""

    @authenticated
    async def get(self, assignment_id: str) -> None:
        await self.answer_files(assignment_id)

    async def answer_files(self, assignment_id: str) -> None:
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(None, source_files, self.course.root, assignment_id)
        self.write_json([{"name": f.name, "size": f.size} for f in files])

    @authenticated
    async def post(self, assignment_id: str) -> None:
        uploads = self.request.files.get("file", [])
        if not uploads:
            raise HTTPError(400, "No file: send them as multipart fields named 'file'.")
        limit = cast("FormGrader", self.service).upload_limit
        try:
            for upload in uploads:
                check_upload(upload.filename, upload.body, limit)
        except BadUpload as e:
            raise HTTPError(400, str(e)) from None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._save, assignment_id, uploads)
        await self.answer_files(assignment_id)

    def _save(self, assignment_id: str, uploads: list[Any]) -> None:
        for upload in uploads:
            path = source_file(self.course.root, assignment_id, upload.filename)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.upload")
            partial.write_bytes(upload.body)
            partial.replace(path)  # never a half-written notebook under its own name


class SourceFileHandler(CourseAccess):
    """``<course>/api/assignment/<id>/source/<file>``: one source file, as a download."""

    @authenticated
    async def get(self, assignment_id: str, name: str) -> None:
        path = source_file(self.course.root, assignment_id, name)
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, path.is_file):
            raise HTTPError(404, f"No file {name} in the source of {assignment_id}.")
        body = await loop.run_in_executor(None, path.read_bytes)
        # never rendered here: a notebook's HTML outputs must not run with our origin
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(body)


class RosterHandler(JobsAPI):
    """``POST <course>/api/roster/group``: the course's student group on the hub, or
    ``POST <course>/api/roster/csv`` (multipart ``file``): added to the gradebook's students,
    names updated. Answers the roster."""

    @authenticated
    async def post(self, source: str) -> None:
        if source == "group":
            students = await self._from_group()
        else:
            uploads = self.request.files.get("file", [])
            if len(uploads) != 1:
                raise HTTPError(400, "Send one CSV file as the multipart field 'file'.")
            try:
                students = roster_from_csv(uploads[0].body.decode("utf-8-sig"))
            except (BadUpload, UnicodeDecodeError) as e:
                raise HTTPError(400, f"{uploads[0].filename}: {e}") from None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self.runtime.executor, self.in_request_session, lambda: self._add(students)
        )
        self.write_json({"added": [s.id for s in students]})

    async def _from_group(self) -> list[Student]:
        service = cast("FormGrader", self.service)
        group = service.student_group(self.course.id)
        try:
            model = await service.hub.get("groups", group)
        except HubAPIError as e:
            raise HTTPError(400, f"Could not read the hub group {group}: {e}") from None
        return roster_from_group(model.get("users", []))

    def _add(self, students: list[Student]) -> None:
        for student in students:
            # what the source does not say is kept (a group import keeps a CSV's names)
            known = {k: v for k, v in vars(student).items() if v and k != "id"}
            row = self.gradebook.update_or_create_student(student.id, **known)
            # nbgrader's pages print a missing name as "None"
            row.first_name = row.first_name or ""
            row.last_name = row.last_name or ""
        self.gradebook.db.commit()


class NotebookViewHandler(CourseAccess):
    """``<course>/view/<source|release>/<assignment>/[<notebook>]``: an assignment's notebooks,
    read-only: a list, or one notebook rendered by nbconvert. Where nbgrader's assignment name
    and preview icon lead (they would open a notebook server). The rendered page runs no script
    and has no origin of ours (a sandbox CSP): a notebook's outputs may hold anything."""

    @authenticated
    async def get(self, kind: str, assignment_id: str, name: str | None = None) -> None:
        folder = self.course.root / kind / assignment_id
        loop = asyncio.get_running_loop()
        if name is None:
            names = await loop.run_in_executor(None, _notebooks_in, folder)
            self.render_page(
                "view.html",
                course=self.course,
                kind=kind,
                assignment=assignment_id,
                notebooks=names,
                nav=self.nav,
            )
            return
        path = folder / name
        if not name.endswith(".ipynb") or not await loop.run_in_executor(None, path.is_file):
            raise HTTPError(404, f"No notebook {name} in {kind}/{assignment_id}.")
        html = await loop.run_in_executor(None, _render_notebook, path)
        self.set_header("Content-Security-Policy", SANDBOX_CSP)
        self.finish(html)


def _notebooks_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob("*.ipynb") if p.is_file() and is_safe_id(p.name))


#: nbconvert's classic page without its scripts (jQuery, require.js, mermaid, widgets,
#: MathJax): the view's sandbox would block them anyway, and they would come from a CDN.
READ_ONLY_VIEW = {
    "readonly.html.j2": "{%- extends 'index.html.j2' -%}"
    "{%- block html_head_js -%}{%- endblock html_head_js -%}"
    "{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}",
    "mathjax.html.j2": mathjax_macro(""),
}


def _render_notebook(path: Path) -> str:
    exporter = HTMLExporter(  # type: ignore[no-untyped-call]  # nbconvert is untyped
        template_name="classic",
        template_file="readonly.html.j2",
        extra_loaders=[DictLoader(READ_ONLY_VIEW)],
    )
    html: str = exporter.from_filename(str(path))[0]
    return html


class GradesExportHandler(CourseAccess):
    """``<course>/export/grades.csv`` and ``<course>/export/<assignment>/grades.csv``.

    nbgrader's CSV export (``nbgrader export``), as a download, its cells neutralized.
    """

    @authenticated
    async def get(self, assignment_id: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        csv = await loop.run_in_executor(self.runtime.executor, self._export, assignment_id)
        name = (
            f"{self.course.id}-{assignment_id}-grades.csv"
            if assignment_id
            else (f"{self.course.id}-grades.csv")
        )
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(csv)

    def _export(self, assignment_id: str | None) -> str:
        if assignment_id and assignment_id not in {a.name for a in self.gradebook.assignments}:
            self.gradebook.db.remove()
            raise HTTPError(404, f"No assignment {assignment_id} in {self.course.id}.")
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "grades.csv"
            exporter = SafeCsvExportPlugin(
                to=str(dest), assignment=[assignment_id] if assignment_id else []
            )
            try:
                exporter.export(self.gradebook)
            finally:
                self.gradebook.db.remove()
            return dest.read_text()


def course_handlers() -> list[tuple[str, type, dict[str, Any]]]:
    """Our routes relative to a course, next to nbgrader's."""
    return [
        ("", CourseHandler, {}),
        ("api/jobs", JobsHandler, {}),
        (r"api/jobs/(\d+)", JobHandler, {}),
        (r"api/batches/(\d+)", BatchHandler, {}),
        (r"api/batches/(\d+)/cancel", CancelBatchHandler, {}),
        ("api/assignment/([^/]+)/autograde", AutogradeAllHandler, {}),
        (f"api/assignment/([^/]+)/({'|'.join(ASSIGNMENT_ACTIONS)})", AssignmentActionHandler, {}),
        (
            f"api/submission/([^/]+)/([^/]+)/({'|'.join(SUBMISSION_ACTIONS)})",
            SubmissionActionHandler,
            {},
        ),
        ("api/assignment/([^/]+)/source", SourceFilesHandler, {}),
        ("api/assignment/([^/]+)/source/([^/]+)", SourceFileHandler, {}),
        ("api/roster/(group|csv)", RosterHandler, {}),
        ("view/(source|release)/([^/]+)/", NotebookViewHandler, {}),
        ("view/(source|release)/([^/]+)/([^/]+)", NotebookViewHandler, {}),
        ("export/grades.csv", GradesExportHandler, {}),
        ("export/([^/]+)/grades.csv", GradesExportHandler, {}),
    ]
