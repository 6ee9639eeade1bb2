"""nbgrader's own formgrader, as nbgrader's "Using nbgrader with JupyterHub" documents it for
one class with several graders: the reference our formgrader is measured and compared against.

A managed hub service named after the course runs ``jupyterhub-singleuser`` (with nbgrader's
formgrader server extension) in a grader account's home; the course directory and
``~/.jupyter/nbgrader_config.py`` are in that home; the graders are in ``formgrade-<course>``,
with a role that may access the service. Its pages are at ``/services/<course>/formgrader/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def reference_hub_config(course: str, home: Path, graders: list[str], port: int) -> str:
    """``jupyterhub_config.py`` lines for the graders' group and nbgrader's formgrader."""
    command = [str(Path(sys.executable).parent / "jupyterhub-singleuser")]
    if os.geteuid() == 0:
        command.append("--allow-root")
    service = {
        "name": course,
        "url": f"http://127.0.0.1:{port}",
        "command": command,
        "cwd": str(home),
        "environment": {"HOME": str(home)},
        "oauth_no_confirm": True,  # as ours: graders are not asked to authorize each service
    }
    role = {
        "name": f"formgrade-{course}",
        "groups": [f"formgrade-{course}"],
        "scopes": [
            f"access:services!service={course}",
            "list:services",
            f"read:services!service={course}",
        ],
    }
    return f"""
c.JupyterHub.load_groups = {{"formgrade-{course}": {{"users": {graders!r}}}}}
c.JupyterHub.load_roles.append({role!r})
c.JupyterHub.services.append({service!r})
"""


def write_reference_config(
    home: Path, course: str, course_root: Path, exchange: Path, db_url: str | None = None
) -> None:
    """The grader account's ``~/.jupyter/nbgrader_config.py``; the gradebook at ``db_url``
    (default: nbgrader's own, SQLite in the course root)."""
    jupyter = home / ".jupyter"
    jupyter.mkdir(parents=True, exist_ok=True)
    gradebook = f"c.CourseDirectory.db_url = {db_url!r}\n" if db_url else ""
    (jupyter / "nbgrader_config.py").write_text(
        f"c = get_config()  # noqa\nc.CourseDirectory.root = {str(course_root)!r}\n"
        f"c.CourseDirectory.course_id = {course!r}\nc.Exchange.root = {str(exchange)!r}\n"
        + gradebook
    )
