"""One long nbgrader action in its own process: ``python -m hubservices.formgrader.worker``.

The service runs generate, release, collect, autograde and feedback here, not in its event loop
and not in its environment: the process starts with :func:`courses.worker_env` (no hub token,
no secret), so the student code autograde executes cannot read them from its environment. Jobs
arrive as JSON lines on stdin (the database URL may hold a password, and argv is visible to every
local user), one after the other for as long as the service has more (an autograde of every
submission); each result, nbgrader's own ``{"success", "log", "error"}``, leaves as one JSON line
on stdout.

Student code never shares that stdout: autograde runs each notebook's kernel in a sandbox
(:mod:`.execute`) whose stdin is /dev/null and whose stdout and stderr are a file of its own,
with no other descriptor of this process passed on; what the kernel prints reaches us only as
kernel messages, which land in the notebook. So fd 1 stays the result channel (a pipe of its
own would carry the same lines), and nbgrader's log goes to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from traitlets.config import Config

from .courses import Course
from .sandbox import REFUSED

#: NbGraderAPI methods a job may call, with the number of ids each takes.
ACTIONS = {
    "generate_assignment": 1,
    "unrelease": 1,
    "release_assignment": 1,
    "collect": 1,
    "autograde": 2,
    "generate_feedback": (1, 2),
    "release_feedback": (1, 2),
}


def nbgrader_config(course: Course) -> Config:
    """nbgrader's configuration for a course: its directories, database and exchange."""
    config = Config({section: dict(values) for section, values in course.nbgrader.items()})
    config.CourseDirectory.root = str(course.root)
    config.CourseDirectory.course_id = course.id
    config.CourseDirectory.db_url = course.db_url
    config.Exchange.root = str(course.exchange)
    config.NbGraderAPI.timezone = course.timezone
    return config


def course_to_json(course: Course) -> dict[str, Any]:
    return {**course.__dict__, "root": str(course.root), "exchange": str(course.exchange)}


def course_from_json(data: dict[str, Any]) -> Course:
    return Course(**{**data, "root": Path(data["root"]), "exchange": Path(data["exchange"])})


def run(course: Course, action: str, args: list[str]) -> dict[str, Any]:
    """Call the NbGraderAPI method for ``action``, as nbgrader's own formgrader would."""
    counts = ACTIONS[action]
    if len(args) not in (counts if isinstance(counts, tuple) else (counts,)):
        raise ValueError(f"{action} takes {counts} ids, not {len(args)}")
    # imported at the first job, after main() kept rfc3987_syntax out
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    config = nbgrader_config(course)
    if action != "autograde":
        api = NbGraderAPI(CourseDirectory(config=config), config=config)
        result: dict[str, Any] = getattr(api, action)(*args)
        return result
    return autograde(config, *args)


def autograde(config: Config, assignment_id: str, student_id: str) -> dict[str, Any]:
    """nbgrader's autograde with the student's kernel in a sandbox (:mod:`.execute`).

    Refused with the fix named if bubblewrap cannot run here and the admin did not allow
    unsandboxed autograde. The result says which isolation ran (``"sandbox"``: "bubblewrap" or
    "none") and, when a limit stopped the notebook, starts its error with why.
    """
    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from . import dask_executor, execute
    from .sandbox import SandboxUnavailable

    if dask_executor.configured(config):  # the sandbox is the Dask worker's, checked there
        config = dask_executor.on_dask(config)
    else:
        config = execute.sandboxed(config)
        try:
            execute.SandboxedExecute(config=config).sandbox()
        except SandboxUnavailable as e:
            return {"success": False, "error": f"autograde refused: {e}", "sandbox": REFUSED}
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    with execute.reporting() as report:
        result: dict[str, Any] = api.autograde(assignment_id, student_id)
    result["sandbox"] = report.isolation
    if report.executed_on:
        result["dask_workers"] = report.executed_on
    if report.problems and not result.get("success"):
        result["error"] = "\n".join(report.problems) + "\n\n" + (result.get("error") or "")
    return result


def main() -> None:
    """Run the jobs of stdin, one JSON line each, answering each with one line on stdout.

    stdout is kept for the results alone (nbgrader logs to stderr). An exception ends the
    process, its traceback on stderr: the service reports it and starts a fresh worker.
    """
    # jsonschema (which nbformat imports) imports rfc3987_syntax if installed, and that builds
    # an IRI grammar: 1.4 s of every worker's start, for format checks nbgrader never makes
    # (None in sys.modules makes its import raise ImportError, as if it were not installed)
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # typeshed omits None
    out, sys.stdout = sys.stdout, sys.stderr
    for line in sys.stdin:
        job = json.loads(line)
        result = run(course_from_json(job["course"]), job["action"], job["args"])
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
