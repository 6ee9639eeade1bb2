"""A scriptable stand-in for the JupyterHub API, for fault injection in unit tests.

A real tornado HTTP server on a free port of 127.0.0.1, so the client under test goes through
real sockets: refused connections, timeouts, a hub that stops and comes back. Tests queue
replies per method and path (5xx, 429, slow answers); requests nobody scripted get a minimal
hub: the API root, GET /users paginated by JupyterHub's own code, and GET /users/<name>.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from jupyterhub.apihandlers.base import APIHandler
from tornado import httpserver, netutil, web

VERSION = "6.1.1"
PAGE_LIMIT = 200  # the hub's api_page_max_limit, the most it returns at once


@dataclass
class Reply:
    """A scripted answer; `body` is sent as JSON unless it is bytes."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def error(status: int, message: str, **headers: str) -> Reply:
    """An error in the hub's format (APIHandler.write_error)."""
    return Reply(status, {"status": status, "message": message}, headers)


@dataclass
class Received:
    """A request as it reached the hub: `uri` is the raw path and query, still quoted."""

    method: str
    uri: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return self.uri.partition("?")[0]


class FakeHub:
    """Serves /hub/api on 127.0.0.1; `script` queues replies, `received` records requests."""

    def __init__(self, users: Sequence[str] = (), port: int = 0) -> None:
        self.users = [{"kind": "user", "name": name, "servers": {}} for name in users]
        self.port = port
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._replies: dict[tuple[str, str], deque[Reply]] = defaultdict(deque)
        self._server: httpserver.HTTPServer | None = None
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/api"

    def script(self, method: str, path: str, *replies: Reply) -> None:
        """Queue replies to `method` on the raw API `path` (e.g. "/users/dana%231")."""
        self._replies[method, path].extend(replies)

    def requests_to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == "/hub/api" + path]

    async def start(self) -> None:
        """Listen on `port`, the same one again after stop() (0 picks a free port)."""
        app = web.Application(
            [(r"/hub/api/.*", _Handler, {"hub": self})],
            api_page_default_limit=PAGE_LIMIT,
            api_page_max_limit=PAGE_LIMIT,
        )
        self._stopping = asyncio.Event()
        sockets = netutil.bind_sockets(self.port, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server = httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        """Stop listening and drop connections, as a hub that goes away does."""
        self._stopping.set()  # wakes handlers sleeping in a delayed reply
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    def _next_reply(self, method: str, path: str) -> Reply | None:
        queue = self._replies[method, path]
        return queue.popleft() if queue else None


class _Handler(web.RequestHandler):
    # The hub's own pagination code, so pages look exactly like a real hub's.
    accepts_pagination = APIHandler.accepts_pagination
    get_api_pagination = APIHandler.get_api_pagination
    paginated_model = APIHandler.paginated_model

    def initialize(self, hub: FakeHub) -> None:
        self.hub = hub

    async def _serve(self) -> None:
        hub = self.hub
        request = self.request
        path = request.path.removeprefix("/hub/api")
        hub.received.append(
            Received(request.method or "", request.uri or "", dict(request.headers), request.body)
        )
        hub.in_flight += 1
        hub.max_in_flight = max(hub.max_in_flight, hub.in_flight)
        try:
            reply = hub._next_reply(request.method or "", path) or self._default_reply(path)
            if reply.delay:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(hub._stopping.wait(), reply.delay)
            self.set_status(reply.status)
            self.set_header("X-JupyterHub-Version", VERSION)
            for name, value in reply.headers.items():
                self.set_header(name, value)
            if reply.body is not None:
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
                self.write(body)
        finally:
            hub.in_flight -= 1

    def _default_reply(self, path: str) -> Reply:
        """The few endpoints a test needs without scripting them, routed like the hub.

        The route matches the raw, still quoted path, and only then is the name unquoted,
        as for the hub's r"/api/users/([^/]+)": "/users/a/b" is not user "a/b".
        """
        if self.request.method != "GET":
            return error(404, "Not Found")
        if path == "/":
            return Reply(body={"version": VERSION})
        if path == "/users":
            offset, limit = self.get_api_pagination()
            page = self.hub.users[offset : offset + limit]
            if not self.accepts_pagination:
                return Reply(body=page)
            return Reply(body=self.paginated_model(page, offset, limit, len(self.hub.users)))
        segments = path.split("/")
        if len(segments) == 3 and segments[1] == "users" and segments[2]:
            for user in self.hub.users:
                if user["name"] == unquote(segments[2]):
                    return Reply(body=user)
        return error(404, "Not Found")

    get = post = delete = patch = put = _serve
