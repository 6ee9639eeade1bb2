"""A JupyterHub spawner whose servers cost no process: for scale tests and benchmarks.

Every :class:`LightSpawner` server is the same tiny HTTP responder, started once per hub
process inside the hub's event loop, that answers any path with 200. The hub's ready check
(``GET <server>/api``) and the proxy's routes to ``/user/<name>/`` therefore work, and one hub
holds thousands of "running" servers: 5,000 users with 1,000 servers of which 200 are idle.

Configuration (``c.LightSpawner.<option>``; the hub must import this module, so the project
root must be on its ``PYTHONPATH``):

- ``start_delay``, ``stop_delay``: seconds that ``start()``/``stop()`` take (each stop logs
  ``LightSpawner: stops in flight: <user[:server]> ...``, to check a client's concurrency);
  the user option ``start_delay`` overrides the first for one server (a spawn that stays
  pending). A stop slower than the hub's ``slow_stop_timeout``
  (``c.JupyterHub.tornado_settings = {"slow_stop_timeout": s}``, 10 s by default) makes the
  hub answer ``DELETE .../server`` with 202 instead of 204.
- Starting more than ``c.JupyterHub.concurrent_spawn_limit`` (100) servers at once makes the
  hub answer 429 with a Retry-After of 30-60 s: start at most 100 at a time, or raise the limit.
- ``c.JupyterHub.cleanup_servers = False`` keeps the servers "running" over a hub restart.

Idle servers: ``POST /hub/api/users/<name>/activity`` with
``{"servers": {"<server name>": {"last_activity": "<iso8601 Z>"}}}`` (scope
``users:activity``, which ``admin:users`` includes) works on these servers, but the hub only
ever moves ``last_activity`` forward, and a spawn sets it to now: the API alone cannot make a
fresh server idle. So start the server with the user option ``idle_seconds``::

    POST /hub/api/users/<name>/server  {"idle_seconds": 3600}

and its ``last_activity`` starts one hour in the past; the activity API may then move it to any
later time. The hub keeps user options for the next start without a body. Traffic through the
proxy to ``/user/<name>/`` counts as activity again (the hub reads it from the proxy every
``last_activity_interval``, 5 minutes by default).

A bad ``idle_seconds`` (not a number, negative) fails the spawn with 400.

Hub restart: ``poll()`` reports the server running from its saved state, the new hub process
asks ``get_url()``, which starts this process's responder on a new port; the hub stores that
port (logging "had invalid url ... Updating" once per server), checks the server is up and
points the proxy's routes at it.

Cost: the hub, not the spawner, limits the pace. On 2 CPUs it created 1,000 users in ~10 s,
started 1,000 servers in ~40 s (about 25 a second, whatever the client's concurrency),
polled them at ~1 % CPU, and restarted with them in ~20 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from jupyterhub import __version__
from jupyterhub.spawner import Spawner
from jupyterhub.utils import utcnow
from tornado import httpserver, netutil, web
from traitlets import Float, default

__all__ = ["LightSpawner"]

_responder_url: str | None = None
_stopping: set[str] = set()  # "user" or "user:server" of the stops under way


class _Responder(web.RequestHandler):
    """Answers every method and path with 200, like a single-user server that is up."""

    def prepare(self) -> None:
        # The hub compares this with its own version and warns for each server without it.
        self.set_header("X-JupyterHub-Version", __version__)
        self.finish("lightspawner\n")


def _no_access_log(handler: web.RequestHandler) -> None:
    """Thousands of ready checks would drown the hub's log."""


def responder_url() -> str:
    """The shared responder's URL, starting it in the running event loop on first use.

    Synchronous, so concurrent spawns cannot start two responders.
    """
    global _responder_url
    if _responder_url is None:
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        app = web.Application([(r".*", _Responder)], log_function=_no_access_log)
        httpserver.HTTPServer(app).add_sockets(sockets)
        _responder_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    return _responder_url


def _apply_idle_seconds(spawner: Spawner, user_options: dict[str, Any]) -> None:
    """The user option ``idle_seconds`` backdates the new server's last activity.

    The hub calls this hook after setting last_activity to now and commits after start().
    A bad value fails the spawn with 400 instead of making a server with odd activity.
    """
    idle_seconds = user_options.get("idle_seconds", 0)
    if isinstance(idle_seconds, bool) or not isinstance(idle_seconds, (int, float)):
        raise web.HTTPError(400, f"idle_seconds must be a number, not {idle_seconds!r}")
    if idle_seconds < 0:
        raise web.HTTPError(400, f"idle_seconds must not be negative, not {idle_seconds}")
    if idle_seconds:
        spawner.orm_spawner.last_activity = utcnow(with_tz=False) - timedelta(seconds=idle_seconds)


class LightSpawner(Spawner):  # type: ignore[misc]  # jupyterhub has no type information
    """A server that is a flag in the hub's database plus the shared responder.

    ``poll()`` only reads that flag, so the hub's periodic poll of every server stays cheap.
    """

    start_delay = Float(0.0, help="Seconds start() takes, to mimic a slow spawner.").tag(
        config=True
    )
    stop_delay = Float(0.0, help="Seconds stop() takes, e.g. 0.5 for slow stops.").tag(config=True)

    #: Whether the server is "up"; the hub keeps it in its database through get_state().
    running: bool = False

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Callable[[Spawner, dict[str, Any]], None]:
        return _apply_idle_seconds

    async def start(self) -> str:
        """Mark the server running (poll() must say so while start is pending), return its URL."""
        self.running = True
        await asyncio.sleep(self.user_options.get("start_delay", self.start_delay))
        return responder_url()

    async def stop(self, now: bool = False) -> None:
        """Take stop_delay seconds, then the server is gone.

        Logs the servers whose stops are in flight, so a test can check a client's concurrency.
        """
        label = f"{self.user.name}:{self.name}" if self.name else self.user.name
        _stopping.add(label)
        self.log.info("LightSpawner: stops in flight: %s", " ".join(sorted(_stopping)))
        try:
            await asyncio.sleep(self.stop_delay)
        finally:
            _stopping.discard(label)
        self.running = False

    async def poll(self) -> int | None:
        """None while running, 0 (exit status unknown) once stopped or never started."""
        return None if self.running else 0

    async def get_url(self) -> str:
        """After a hub restart, the server lives at this process's responder, on a new port."""
        return responder_url() + self.server.base_url

    def get_state(self) -> dict[str, Any]:
        """Remember that the server runs, so that a restarted hub keeps it."""
        state: dict[str, Any] = super().get_state()
        if self.running:
            state["running"] = True
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the running flag saved by get_state()."""
        super().load_state(state)
        self.running = bool(state.get("running"))

    def clear_state(self) -> None:
        """The server stopped: nothing left to remember."""
        super().clear_state()
        self.running = False
