"""Async client for the JupyterHub REST API, shared by the hub services.

One place gets the hard parts right for every service: URL-quoting user-supplied names,
following pagination past the hub's page limit, retrying a hub that restarts or sheds load,
bounding concurrency, and turning the hub's JSON errors into exceptions that say what is wrong.
The API token is sent in the Authorization header only; logs and exceptions name the method
and path, never headers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx

__all__ = [
    "PAGINATION_MEDIA_TYPE",
    "HubAPI",
    "HubAPIError",
    "HubUnavailable",
    "MissingScopeError",
    "RequestObserver",
    "api_path",
    "api_route",
]

log = logging.getLogger(__name__)

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"

# Resending these cannot do an action twice, so any transient failure may be retried.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Raised before the request reached the hub: safe to resend whatever the method.
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The hub (or its proxy) refused the request without acting on it, and may say when to return.
_REFUSED_STATUSES = frozenset({429, 503})
# "." and ".." are dot-segments: httpx and proxies collapse them, addressing a parent resource.
_DOT_SEGMENTS = {".": "%2E", "..": "%2E%2E"}
# jupyterhub.scopes.needs_scope: "...; requires any of [list:users, admin:users]"
_REQUIRED_SCOPES = re.compile(r"requires any of \[([^\]]*)\]")


class HubAPIError(Exception):
    """The hub answered a request with an error, or could not be reached."""

    def __init__(self, method: str, path: str, status: int | None, message: str) -> None:
        super().__init__(method, path, status, message)
        self.method = method
        self.path = path
        self.status = status
        self.message = message

    def __str__(self) -> str:
        status = "" if self.status is None else f"{self.status}, "
        return f"hub API {self.method} {self.path}: {status}{self.message}"


class MissingScopeError(HubAPIError):
    """403: the token lacks a scope; `scopes` lists the ones the hub would accept."""

    def __init__(self, method: str, path: str, status: int | None, message: str) -> None:
        super().__init__(method, path, status, message)
        match = _REQUIRED_SCOPES.search(message)
        self.scopes = [s.strip() for s in match.group(1).split(",") if s.strip()] if match else []

    def __str__(self) -> str:
        if not self.scopes:
            if "invalid credentials" in self.message.lower():  # the hub does not know the token
                return (
                    f"{super().__str__()} The service's token was refused: revoked, expired "
                    "or never issued by this hub."
                )
            return super().__str__()
        scopes = " or ".join(self.scopes)
        return f"hub API {self.method} {self.path}: 403, the service's token lacks scope {scopes}"


class HubUnavailable(HubAPIError):
    """The hub gave no usable answer: connection error, timeout, 5xx or 429.

    Raised once retries are exhausted, or at once when resending a POST could repeat it.
    The same call may well succeed later.
    """


#: Called after each request sent to the hub (retries included): method, route (see
#: :func:`api_route`), status code or "error" when no answer came, and seconds it took.
RequestObserver = Callable[[str, str, str, float], None]


def api_route(*segments: str) -> str:
    """The path with every name replaced by ``{name}``: a metric label of bounded size.

    Hub API paths alternate collections and names (``users/{name}/servers/{name}``,
    ``groups/{name}/users``), so every second segment is a name.
    """
    return "/" + "/".join("{name}" if i % 2 else s for i, s in enumerate(segments))


def api_path(*segments: str) -> str:
    """Join path segments, percent-encoding every one of them whole.

    Names come from users: "a/b", "dana#1" or "q?x" must stay one segment naming that user,
    not become another user's path, a fragment or a query. Empty segments are refused because
    "users/" + "" would address the user list instead of a user.
    """
    quoted = []
    for segment in segments:
        if not segment:
            raise ValueError(f"empty segment in hub API path {segments!r}")
        quoted.append(_DOT_SEGMENTS.get(segment) or quote(segment, safe=""))
    return "/" + "/".join(quoted)


class HubAPI:
    """JupyterHub REST API client with retries, pagination and bounded concurrency.

    Use as ``async with HubAPI() as hub: users = await hub.list_users()``. Inside a service
    started by the hub, url and token default to $JUPYTERHUB_API_URL and $JUPYTERHUB_API_TOKEN.
    """

    hub_version: str | None
    """The hub's version, from the X-JupyterHub-Version header of the latest response."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        concurrency: int = 10,
        retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        page_size: int | None = None,
        verify: ssl.SSLContext | str | bool = True,
        cert: tuple[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        url = url or os.environ.get("JUPYTERHUB_API_URL")
        if not url:
            raise ValueError("no hub API URL: pass url or set $JUPYTERHUB_API_URL")
        # Caught here, a missing scheme is not retried for minutes as a transport error.
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the hub API URL must start with http:// or https://, not {url!r}")
        # A token read from a file often ends with a newline; h11 would refuse the header
        # with an error that quotes it, token included, into our exceptions and logs.
        token = (token or os.environ.get("JUPYTERHUB_API_TOKEN") or "").strip()
        if not token:
            raise ValueError("no hub API token: pass token or set $JUPYTERHUB_API_TOKEN")
        if not token.isprintable():
            raise ValueError("the hub API token contains control characters")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self._url = url.rstrip("/")
        self._retries = retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._page_size = page_size
        self._observer = observer
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"token {token}"},
            timeout=timeout,
            verify=_ssl_context(verify, cert),
            transport=transport,
        )
        self.hub_version = None

    async def __aenter__(self) -> HubAPI:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    async def request(
        self,
        method: str,
        *segments: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request to the API path made of `segments`; return the 2xx response.

        Connection errors, timeouts, 5xx and 429 are retried with jittered exponential backoff,
        except that a POST (or PATCH) is resent only when the hub surely did not act on it
        (connection never made, 429, 503): resending could create a user or token twice.

        Raises MissingScopeError on 403, HubUnavailable once retrying stops, and HubAPIError
        on any other error status (404 included: check `.status`).
        """
        method = method.upper()
        path = api_path(*segments)
        retry = 0
        while True:
            response: httpx.Response | None = None
            cause: httpx.TransportError | None = None
            try:
                # Hold a slot only while talking to the hub, never while backing off.
                async with self._semaphore:
                    sent = time.monotonic()
                    try:
                        response = await self._client.request(
                            method, self._url + path, params=params, json=json, headers=headers
                        )
                    finally:
                        if self._observer is not None:
                            code = "error" if response is None else str(response.status_code)
                            self._observer(
                                method, api_route(*segments), code, time.monotonic() - sent
                            )
            except httpx.TransportError as exc:
                cause = exc
                problem = _describe(exc)
                hub_may_have_acted = not isinstance(exc, _UNSENT_ERRORS)
            else:
                self.hub_version = response.headers.get("X-JupyterHub-Version", self.hub_version)
                status = response.status_code
                if response.is_success:
                    return response
                if status < 500 and status != 429:
                    error = MissingScopeError if status == 403 else HubAPIError
                    raise error(method, path, status, _hub_message(response))
                problem = str(status)
                hub_may_have_acted = status not in _REFUSED_STATUSES

            may_resend = method in _IDEMPOTENT_METHODS or not hub_may_have_acted
            if not may_resend or retry >= self._retries:
                raise self._unavailable(
                    method, path, response, problem, retried=may_resend, attempts=retry + 1
                ) from cause
            retry += 1
            delay = self._backoff(retry, response)
            log.warning(
                "hub API %s %s: %s, retry %d/%d in %.1fs",
                method,
                path,
                problem,
                retry,
                self._retries,
                delay,
            )
            await asyncio.sleep(delay)

    async def get(self, *segments: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET the path made of `segments`; return the decoded JSON body."""
        response = await self.request("GET", *segments, params=params)
        return response.json()

    async def post(
        self, *segments: str, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """POST `json`; return the decoded JSON body, or None when the hub sends no body."""
        response = await self.request("POST", *segments, json=json, params=params)
        return response.json() if response.content else None

    async def delete(
        self, *segments: str, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> int:
        """DELETE; return the status, as 202 (still stopping) differs from 204 for servers."""
        response = await self.request("DELETE", *segments, json=json, params=params)
        return response.status_code

    async def paginate(
        self, *segments: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield every item of a list endpoint, page after page.

        Without the pagination Accept header a hub cuts lists at its page limit silently.
        The next page is asked for by offset on our own URL rather than the hub's
        `_pagination.next.url`, which carries the hub's idea of its host and scheme.
        Offsets shift when items are created or deleted meanwhile: collect the whole list
        before deleting what it contains.
        """
        query = dict(params or {})
        if self._page_size:
            query["limit"] = self._page_size
        while True:
            response = await self.request(
                "GET", *segments, params=query, headers={"Accept": PAGINATION_MEDIA_TYPE}
            )
            body = response.json()
            if isinstance(body, list):  # JupyterHub < 2.0 has no pagination
                for item in body:
                    yield item
                return
            for item in body["items"]:
                yield item
            next_page = body["_pagination"]["next"]
            if next_page is None:
                return
            query.update(offset=next_page["offset"], limit=next_page["limit"])

    async def list_users(
        self,
        *,
        state: Literal["active", "inactive", "ready"] | None = None,
        include_stopped_servers: bool = False,
    ) -> list[dict[str, Any]]:
        """All users (optionally only those whose servers are in `state`), every page."""
        params: dict[str, Any] = {}
        if state is not None:
            params["state"] = state
        if include_stopped_servers:
            params["include_stopped_servers"] = True
        return [user async for user in self.paginate("users", params=params)]

    async def list_groups(self) -> list[dict[str, Any]]:
        """All groups, every page."""
        return [group async for group in self.paginate("groups")]

    async def get_user(self, name: str) -> dict[str, Any]:
        """One user's model; HubAPIError with status 404 if there is no such user."""
        user: dict[str, Any] = await self.get("users", name)
        return user

    async def create_users(self, names: list[str], *, admin: bool = False) -> list[dict[str, Any]]:
        """Create users; the hub skips existing names and answers 409 if all exist."""
        created: list[dict[str, Any]] = await self.post(
            "users", json={"usernames": names, "admin": admin}
        )
        return created

    async def delete_user(self, name: str) -> None:
        """Delete a user, stopping their servers."""
        await self.delete("users", name)

    async def create_group(self, name: str) -> dict[str, Any]:
        """Create an empty group; 409 if it exists."""
        group: dict[str, Any] = await self.post("groups", name)
        return group

    async def add_group_users(self, group: str, users: list[str]) -> None:
        """Add existing users to a group."""
        await self.post("groups", group, "users", json={"users": users})

    async def start_server(self, user: str, server: str = "") -> int:
        """Start the default or a named server; 201 means started, 202 still starting."""
        response = await self.request("POST", *_server_path(user, server))
        return response.status_code

    async def stop_server(self, user: str, server: str = "", *, remove: bool = False) -> int:
        """Stop a server, and with `remove` delete a named one; 204 stopped, 202 stopping."""
        body = {"remove": True} if remove else None
        return await self.delete(*_server_path(user, server), json=body)

    async def create_token(
        self,
        user: str,
        *,
        scopes: list[str] | None = None,
        note: str = "",
        expires_in: int | None = None,
    ) -> str:
        """Issue an API token for `user`; None scopes means the hub's default for tokens."""
        body: dict[str, Any] = {"note": note}
        if scopes is not None:
            body["scopes"] = scopes
        if expires_in is not None:
            body["expires_in"] = expires_in
        model = await self.post("users", user, "tokens", json=body)
        token: str = model["token"]
        return token

    async def hub_info(self) -> dict[str, Any]:
        """The API root: {"version": ...}; needs no scope, so it checks URL and reachability."""
        info: dict[str, Any] = await self.get()
        return info

    def _unavailable(
        self,
        method: str,
        path: str,
        response: httpx.Response | None,
        problem: str,
        *,
        retried: bool,
        attempts: int,
    ) -> HubUnavailable:
        """The error for a request that failed transiently and will not be sent again."""
        if response is None:
            detail = f"no answer from the hub at {self._url} ({problem})"
        else:
            detail = _hub_message(response)
        if retried:
            detail += f"; gave up after {attempts} attempts"
        else:
            detail += f"; not resent, the hub may have acted on this {method} already"
        status = None if response is None else response.status_code
        return HubUnavailable(method, path, status, detail)

    def _backoff(self, retry: int, response: httpx.Response | None) -> float:
        """Seconds before retry number `retry`: the hub's Retry-After, else full jitter."""
        if response is not None and response.status_code in _REFUSED_STATUSES:
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                # Capped, so that a misconfigured proxy cannot stall a service for hours.
                return min(retry_after, self._backoff_max)
        return random.uniform(0, min(self._backoff_max, self._backoff_base * 2 ** (retry - 1)))


def _server_path(user: str, server: str) -> tuple[str, ...]:
    return ("users", user, "servers", server) if server else ("users", user, "server")


def _ssl_context(
    verify: ssl.SSLContext | str | bool, cert: tuple[str, str] | None
) -> ssl.SSLContext | bool:
    """httpx 0.28 deprecates verify=<CA file> and cert=, so build the context here.

    A client certificate given with an SSLContext is loaded into that context.
    """
    if cert is None and not isinstance(verify, str):
        return verify
    if isinstance(verify, ssl.SSLContext):
        context = verify
    else:
        context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def _hub_message(response: httpx.Response) -> str:
    """The "message" of the hub's JSON error body, else the HTTP reason (a proxy's HTML page)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) and message else response.reason_phrase


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from delay-seconds or an HTTP-date; None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdecimal():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: httpx.TransportError) -> str:
    """Name and message, e.g. "ConnectError: All connection attempts failed"."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
