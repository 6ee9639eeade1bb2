"""The demo formgrader's config: course101, with its state under .demo/ (the hub's directory).

The sample assignment is copied from deploy/local/course101/source on first start, so the demo
never writes into the repository.
"""

import shutil
from pathlib import Path

c = get_config()  # noqa: F821

demo = Path.cwd()
course_root = demo / "courses" / "course101"
exchange = demo / "exchange"
if not (course_root / "source").exists():
    shutil.copytree(Path(__file__).parent / "source", course_root / "source")
exchange.mkdir(mode=0o777, parents=True, exist_ok=True)

c.FormGrader.courses = {
    "course101": {"root": str(course_root), "exchange": str(exchange)},
}
