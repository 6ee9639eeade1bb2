"""The Content-Security-Policy of every page we serve, in one place.

Its own module, free of web imports, because the formgrader's pure rules (``courses``) build
nbgrader pages' policies from it and its worker processes import those rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Our pages' sources: this origin only; no inline script, no framing by another site.
_CSP_SOURCES: dict[str, tuple[str, ...]] = {
    "default-src": ("'none'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'", "data:"),
    "font-src": ("'self'",),
    "connect-src": ("'self'",),
    "form-action": ("'self'",),
    "frame-ancestors": ("'self'",),
    "base-uri": ("'none'",),
}


def content_security_policy(more: Mapping[str, Iterable[str]] | None = None) -> str:
    """The policy of a page: our sources, plus ``more`` per directive, e.g.
    ``{"script-src": ["'sha256-…'"]}`` for a page whose inline scripts are known."""
    more = more or {}
    return "; ".join(
        " ".join([name, *sources, *more.get(name, ())]) for name, sources in _CSP_SOURCES.items()
    )


#: Our own pages' policy.
CONTENT_SECURITY_POLICY = content_security_policy()
