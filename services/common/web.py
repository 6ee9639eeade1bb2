"""Hub-authenticated tornado handlers every service builds on.

Pages log browsers in through the hub (HubOAuth); API routes take ``Authorization: token …`` or
``Bearer …`` and answer JSON, never a login redirect. Authentication is the hub's (the user's
scopes must grant access to this service); authorization is the service's
(:meth:`HubServiceApp.user_allowed`: admin flag, users, groups). Cookie-authenticated requests
that change state need the XSRF token; HubOAuth refuses the cookie without it.

What a handler may touch is what its service hands it as tornado settings
(:meth:`HubServiceApp.web_settings`), each read through a typed :class:`Setting`, as
jupyter_server's ``JupyterHandler.serverapp`` and JupyterHub's ``BaseHandler`` read theirs:
handlers see a store or an audit trail, never the whole application.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from http.client import responses
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

from jinja2 import Environment
from jupyterhub.services.auth import (
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
)
from prometheus_client.exposition import choose_encoder
from tornado.web import HTTPError, RequestHandler, authenticated

from .csp import CONTENT_SECURITY_POLICY

if TYPE_CHECKING:
    from .app import HubServiceApp

log = logging.getLogger(__name__)

#: Request methods that get their own metrics label (RFC 9110's and PATCH); any other name a
#: client sends is labelled "other", so nobody who reaches the port can add series at will.
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

#: A route relative to the service prefix: pattern, handler class, optional handler kwargs.
Route = tuple[str, type[RequestHandler]] | tuple[str, type[RequestHandler], dict[str, Any]]

T = TypeVar("T")


class HasSettings(Protocol):
    """A tornado handler, or a mixin of one: what a :class:`Setting` reads from."""

    @property
    def settings(self) -> dict[str, Any]: ...


class Setting(Generic[T]):
    """A handler's typed, read-only view of one tornado setting, named as the attribute.

    ``audit = Setting(Audit)`` on a handler class reads ``settings["audit"]`` and checks it is
    an ``Audit``, so a wrong wiring fails on the first request, naming the setting. Without a
    class (``service: Setting[HubServiceApp] = Setting()``) the type is only checked by mypy:
    for classes this module cannot import at run time.
    """

    def __init__(self, kind: type[T] | None = None) -> None:
        self.kind = kind
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, handler: None, owner: type) -> Setting[T]: ...

    @overload
    def __get__(self, handler: HasSettings, owner: type) -> T: ...

    def __get__(self, handler: HasSettings | None, owner: type) -> Setting[T] | T:
        if handler is None:
            return self
        value: T = handler.settings[self.name]
        if self.kind is not None and not isinstance(value, self.kind):
            raise TypeError(f"setting {self.name!r} is a {type(value).__name__}, not {self.kind}")
        return value


class SecureHandler(RequestHandler):
    """Security headers on every response, our own pages included."""

    #: The service's common options and state: name, prefix, access rule, metrics.
    service: Setting[HubServiceApp] = Setting()
    templates = Setting(Environment)

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cross-Origin-Opener-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")


class BaseHandler(HubOAuthenticated, SecureHandler):  # type: ignore[misc]  # jupyterhub is untyped
    """A page: anonymous browsers go to the hub's login, errors render as HTML."""

    hub_auth = Setting(HubOAuth)

    def check_hub_user(self, model: dict[str, Any]) -> dict[str, Any]:
        """The hub says who it is and that it may reach us; the service says whether it may."""
        model = super().check_hub_user(model)
        if not self.service.user_allowed(model):
            log.info(
                "%s %s may not use %s", model["kind"], model["name"], self.service.service_name
            )
            raise UserNotAllowed(model)
        return model

    def denied_message(self) -> str:
        """Why a request got no user: not logged in, or logged in but not allowed."""
        model = getattr(self, "_cached_hub_user", None)
        if model:
            return f"{model.get('name')} may not use the {self.service.service_name} service."
        return "Authentication required."

    def get_login_url(self) -> str:
        """The hub's login for anonymous browsers; a 403 page for users who are not allowed."""
        if getattr(self, "_cached_hub_user", None):
            raise HTTPError(403, self.denied_message())
        return super().get_login_url()

    def int_argument(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        """A whole-number query argument within bounds; a 400 naming it otherwise."""
        raw = self.get_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(400, f"{name} must be a whole number, not {raw!r}") from None
        if not minimum <= value <= maximum:
            raise HTTPError(400, f"{name} must be between {minimum} and {maximum}, not {value}")
        return value

    def render_page(self, template: str, **namespace: Any) -> None:
        """Render a jinja2 template with what every page needs."""
        page = self.templates.get_template(template)
        self.finish(
            page.render(
                service=self.service,
                prefix=self.service.service_prefix,
                user=self.current_user,
                xsrf_token=self.xsrf_token.decode() if self.current_user else "",
                static_url=self.static_url,
                hub_url=self.hub_auth.hub_prefix,
                **namespace,
            )
        )

    def error_message(self, status_code: int, **kwargs: Any) -> str:
        """The message an error response shows: the HTTPError's own, never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        # tornado's log_message doubles a '%' when there are no args ("user '%%'"); not this
        message = exc.get_message() if isinstance(exc, HTTPError) else None
        if message:
            return message
        return responses.get(status_code, "Error")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        page = self.templates.get_template("error.html")
        self.finish(
            page.render(
                service=self.service,
                prefix=self.service.service_prefix,
                user=None,
                static_url=self.static_url,
                status_code=status_code,
                reason=responses.get(status_code, "Error"),
                message=self.error_message(status_code, **kwargs),
                hub_url=self.hub_auth.hub_prefix,
            )
        )


class APIHandler(BaseHandler):
    """A JSON route: 403 JSON instead of a login redirect, JSON errors."""

    def get_login_url(self) -> str:
        raise HTTPError(403, self.denied_message())

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data, default=_json_default))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(
            json.dumps(
                {"status": status_code, "message": self.error_message(status_code, **kwargs)}
            )
        )


class NotFoundHandler(BaseHandler):
    """Any path under the prefix that no route claims."""

    def prepare(self) -> None:
        raise HTTPError(404, f"Nothing at {self.request.path}.")


class OAuthCallbackHandler(HubOAuthCallbackHandler):  # type: ignore[misc]  # jupyterhub is untyped
    """HubOAuth's callback, using this app's HubOAuth instance."""

    hub_auth = Setting(HubOAuth)


class LogoutHandler(BaseHandler):
    """``POST logout``: forget this service's login, then log out of the hub too."""

    @authenticated
    def post(self) -> None:
        self.hub_auth.clear_cookie(self)
        self.redirect(self.hub_auth.hub_prefix + "logout")


class UserAPIHandler(APIHandler):
    """``GET api/user``: who the hub says you are, as this service sees you."""

    @authenticated
    def get(self) -> None:
        user = self.current_user
        self.write_json(
            {
                "kind": user.get("kind", "user"),
                "name": user["name"],
                "admin": bool(user.get("admin")),
                "groups": sorted(user.get("groups", [])),
            }
        )


class HealthHandler(SecureHandler):
    """``GET health``, unauthenticated: the service is up, and whether the hub answers.

    Only that: why the hub does not answer names its internal URL, which is the log's
    business (:meth:`HubServiceApp.hub_status` logs it), not anonymous callers'.
    """

    async def get(self) -> None:
        hub = await self.service.hub_status()
        self.set_header("Content-Type", "application/json")
        self.finish(
            {
                "status": "ok",
                "service": self.service.service_name,
                "version": self.service.version,
                "hub": {"reachable": hub["reachable"]},
            }
        )


class MetricsHandler(APIHandler):
    """``GET metrics``: this service's registry, OpenMetrics when the scraper asks for it.

    Scrapers authenticate with a hub token holding ``metrics_scope``, which no default role
    grants; hub admins with access to this service may read them too. Access to the service
    alone is not enough: every user holds it, so that the service can tell them no itself.
    """

    @property
    def hub_scopes(self) -> set[str]:
        return {self.service.metrics_scope}

    def check_hub_user(self, model: dict[str, Any]) -> dict[str, Any]:
        if model.get("admin") and self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            return model
        # Else the scope alone decides: a Prometheus token need not belong to an admin.
        allowed: dict[str, Any] = HubOAuthenticated.check_hub_user(self, model)
        return allowed

    def get(self) -> None:
        if not self.service.metrics_allow_anonymous and not self.current_user:
            raise HTTPError(403, self.denied_message())
        encoder, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.finish(encoder(self.service.registry))


def _json_default(value: Any) -> str:
    """Datetimes as ISO 8601 (what JavaScript's Date and the hub's API use); else str()."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def common_handlers() -> list[Route]:
    """Routes every service has, relative to its prefix."""
    return [
        ("oauth_callback", OAuthCallbackHandler),
        ("health", HealthHandler),
        ("metrics", MetricsHandler),
        ("logout", LogoutHandler),
        ("api/user", UserAPIHandler),
    ]


def log_request(handler: RequestHandler) -> None:
    """One line per request with the path only: query strings may carry tokens or codes."""
    status = handler.get_status()
    request = handler.request
    seconds = request.request_time()
    quiet = isinstance(handler, (HealthHandler, MetricsHandler)) and status < 400
    level = logging.DEBUG if quiet else logging.INFO if status < 400 else logging.WARNING
    if status >= 500:
        level = logging.ERROR
    model = getattr(handler, "_cached_hub_user", None) or {}
    log.log(
        level,
        "%d %s %s (%s) %.1fms",
        status,
        request.method,
        request.path,
        model.get("name", "-"),
        seconds * 1000,
    )
    service: HubServiceApp = handler.settings["service"]
    method = request.method if request.method in HTTP_METHODS else "other"
    service.request_duration.labels(method, type(handler).__name__, status).observe(seconds)
