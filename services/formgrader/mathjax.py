"""MathJax for the grading page and for feedback, served by this service: no CDN.

nbgrader's templates load MathJax 2.7.7 from a CDN (nbconvert's ``mathjax`` macro): offline,
TeX stays source. ``make`` installs that version from the npm registry (package.json) into
``node_modules/mathjax``; the service serves it under ``<prefix>mathjax/`` to anyone (a public
library: students open their feedback in their own server, and fonts load cross-origin from
there), and both templates' macro points there. Its settings are a file of ours
(``config/local/hubservices.js``): inline configuration would need an inline script.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from nbgrader.server_extensions.formgrader import handlers as nbgrader_pages
from tornado.web import StaticFileHandler

from ..common.web import SecureHandler
from .courses import Course

#: MathJax's combined configuration nbconvert uses, then ours.
MATHJAX_CONFIG = "TeX-AMS_CHTML-full,Safe,local/hubservices"
#: Our MathJax settings file, served as MathJax's ``config/local/hubservices.js``.
LOCAL_CONFIG_DIR = Path(__file__).parent / "static" / "mathjax"
#: nbgrader's feedback template's name: NbGraderAPI insists on it. Ours, of the same name and
#: found first, holds only ``mathjax.html.j2``; the rest is found in nbgrader's.
FEEDBACK_TEMPLATE = "feedback"


def default_mathjax_dir() -> str:
    """Where deploy/install.sh linked MathJax into the venv, or the checkout's node_modules."""
    for found in (
        Path(sys.prefix) / "share" / "hubservices" / "mathjax",
        Path(__file__).resolve().parents[2] / "node_modules" / "mathjax",
    ):
        if (found / "MathJax.js").is_file():
            return str(found)
    return ""


def mathjax_url(service_prefix: str) -> str:
    return f"{service_prefix}mathjax/MathJax.js?config={MATHJAX_CONFIG}"


def mathjax_macro(url: str) -> str:
    """nbconvert's ``mathjax.html.j2``, loading MathJax from ``url`` (nothing if empty)."""
    load = f'<script src="{url}"></script>' if url else ""
    return f"{{%- macro mathjax(url={json.dumps(url)}) -%}}{load}{{%- endmacro -%}}"


def write_feedback_template(basedir: Path, url: str) -> None:
    """Our ``mathjax.html.j2`` in ``basedir``'s feedback template."""
    folder = basedir / FEEDBACK_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mathjax.html.j2").write_text(mathjax_macro(url))


def with_feedback_template(course: Course, basedir: Path) -> Course:
    """``course`` looking for its feedback template in ``basedir`` first, then nbgrader's."""
    nbgrader: dict[str, Any] = {**course.nbgrader}
    exporter = dict(nbgrader.get("HTMLExporter", {}))
    exporter.setdefault("extra_template_basedirs", [str(basedir), nbgrader_pages.template_path])
    nbgrader["HTMLExporter"] = exporter
    return replace(course, nbgrader=nbgrader)


class MathJaxFiles(SecureHandler, StaticFileHandler):
    """MathJax's files, to anyone and any origin (feedback opens in the student's server)."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.clear_header("Cache-Control")
        self.set_header("Access-Control-Allow-Origin", "*")

    def get_cache_time(self, path: str, modified: Any, mime_type: str) -> int:
        return 86400
