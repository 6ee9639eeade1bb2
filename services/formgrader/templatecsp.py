"""Which inline code an nbgrader page may run: the code written in nbgrader's templates.

An nbgrader page's CSP allows its inline scripts and event handlers by hash. The hashes come
from nbgrader's template files, read once at startup, never from the rendered page: a student's
id, name or notebook rendered into a page can add markup to it, but not to the templates. A
script that holds values (``var assignment_id = "{{ assignment_id }}";``) is rendered with the
values the page is rendered with (ids checked before use, the service's own URLs): its values
vary, its code does not.

nbconvert's templates, which the grading page extends, are not read: what they put in a page is
the student's notebook (its outputs' scripts included), which must not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import BaseLoader, Environment, Template, meta

from .courses import csp_hash, event_handlers, inline_scripts


def _has_template_code(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@dataclass(frozen=True)
class InlineCode:
    """Scripts or handlers a template may put in a page: fixed ones by hash, others as templates."""

    fixed: frozenset[str]
    with_values: tuple[Template, ...] = ()

    @classmethod
    def of(cls, sources: Iterable[str], env: Environment) -> InlineCode:
        sources = list(sources)
        return cls(
            fixed=frozenset(csp_hash(s) for s in sources if not _has_template_code(s)),
            with_values=tuple(env.from_string(s) for s in sources if _has_template_code(s)),
        )

    def __or__(self, other: InlineCode) -> InlineCode:
        return InlineCode(self.fixed | other.fixed, self.with_values + other.with_values)

    def hashes(self, values: Mapping[str, Any]) -> set[str]:
        """The hashes of this code in a page rendered with ``values``."""
        return set(self.fixed) | {csp_hash(t.render(values)) for t in self.with_values}


@dataclass(frozen=True)
class PageCode:
    """The inline scripts and event handlers of one template and those it builds on."""

    scripts: InlineCode
    handlers: InlineCode

    def __or__(self, other: PageCode) -> PageCode:
        return PageCode(self.scripts | other.scripts, self.handlers | other.handlers)


class TemplateScripts:
    """The inline code of every template ``loader`` has, read at construction.

    A template's code includes that of the templates it extends, includes or imports when
    ``loader`` has them too; others (nbconvert's) are left out on purpose (see above).
    """

    def __init__(self, loader: BaseLoader) -> None:
        # keep_trailing_newline: a script body that ends in a newline renders as it is written
        self.env = Environment(loader=loader, keep_trailing_newline=True)
        own = {
            name for name in self.env.list_templates() if name.endswith((".tpl", ".j2", ".html"))
        }
        self.pages = {name: self._code(name, own, set()) for name in sorted(own)}

    def _code(self, name: str, own: set[str], seen: set[str]) -> PageCode:
        assert self.env.loader is not None
        source, _, _ = self.env.loader.get_source(self.env, name)
        # handlers hold no template code in nbgrader's templates; one that did would be kept
        # out (hashed as written, it matches nothing) rather than trusted after rendering
        code = PageCode(
            InlineCode.of(inline_scripts(source), self.env),
            InlineCode(frozenset(csp_hash(h) for h in event_handlers(source))),
        )
        for referenced in meta.find_referenced_templates(self.env.parse(source)):
            if referenced is None:
                raise ValueError(f"{name} refers to a template by a computed name")
            if referenced in own and referenced not in seen:
                code |= self._code(referenced, own, seen | {name})
        return code

    def allowed(self, template: str, values: Mapping[str, Any]) -> tuple[set[str], set[str]]:
        """(script hashes, handler hashes) of ``template`` rendered with ``values``.

        KeyError for a template that was not read: nothing of an unknown page is trusted.
        """
        page = self.pages[template]
        return page.scripts.hashes(values), page.handlers.hashes(values)
