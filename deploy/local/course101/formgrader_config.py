"""The demo formgrader's config: course101, with its state under .demo/ (the hub's directory).

The sample assignment is copied from deploy/local/course101/source on first start, so the demo
never writes into the repository.
"""

import shutil
from pathlib import Path

c = get_config()  # noqa: F821

course_root = Path.cwd() / "courses" / "course101"
if not (course_root / "source").exists():
    shutil.copytree(Path(__file__).parent / "source", course_root / "source")

# its exchange: --exchange, which the demo's jupyterhub_config.py passes (and gives the students)
c.FormGrader.courses = {
    "course101": {
        "root": str(course_root),
        # every demo server runs as one OS user: collect would call each submission a cheat
        "nbgrader": {"ExchangeCollect": {"check_owner": False}},
    }
}
# LMS exports (course page > Grades for the LMS): the demo's students as the LMS knows them
c.FormGrader.lms = {
    "course101": {
        "logins": {f"student{i}": f"student{i}@lms.example" for i in (1, 2, 3)},
        "moodle_column": "Email address",
    }
}
