"""The culler's page and JSON API: thin views over what it hands them.

Every hub user sees their own servers on the page (idle how long, stopped when and by which
rule, a "keep it running" button); the culler's admins (``user_allowed``: hub admins unless
configured otherwise) also see everyone's, the cycles and the audit trail, and the API.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated
from tornado.web import HTTPError, authenticated

from ..common.hubapi import HubAPI
from ..common.scheduler import ScheduledJob
from ..common.timeutil import as_utc, parse_time, utcnow
from ..common.web import APIHandler, BaseHandler, Setting
from .audit import Audit, written
from .cycle import CullOptions, LastCycle
from .models import Cull, Cycle
from .policy import Judged, Policy, format_duration, judge_server, refuse_extension

MAX_ROWS = 1000
MAX_MINUTES = 7 * 24 * 60


def cycle_json(cycle: Cycle) -> dict[str, Any]:
    return {
        "id": cycle.id,
        "started_at": as_utc(cycle.started_at),
        "finished_at": as_utc(cycle.finished_at),
        "dry_run": cycle.dry_run,
        "examined": cycle.examined,
        "culled_servers": cycle.culled_servers,
        "culled_users": cycle.culled_users,
        "kept_busy": cycle.kept_busy,
        "errors": cycle.errors,
        "error": cycle.error,
    }


def cull_json(cull: Cull) -> dict[str, Any]:
    return {
        "cycle": cull.cycle_id,
        "at": as_utc(cull.at),
        "kind": cull.kind,
        "user": cull.user,
        "server": cull.server,
        "reason": cull.reason,
        "why": cull.why,
        "rule": cull.rule,
        "idle_seconds": cull.idle_seconds,
        "age_seconds": cull.age_seconds,
        "last_activity": as_utc(cull.last_activity),
        "started": as_utc(cull.started),
        "outcome": cull.outcome,
    }


def upcoming_json(due: datetime, judged: Judged, now: datetime) -> dict[str, Any]:
    return {
        "user": judged.user["name"],
        "server": judged.server_name,
        "due": as_utc(due),
        "in": format_duration(due - now),
        "why": judged.verdict.why,
        "rule": judged.verdict.rule,
    }


class CullViews(BaseHandler):
    """What the culler hands its page and API (see ``Culler.web_settings``), nothing more.

    The audit trail's reads run in a thread: a database must not hold up the event loop.
    """

    audit = Setting(Audit)
    cull_job = Setting(ScheduledJob)
    last_cycle = Setting(LastCycle)
    policy = Setting(Policy)
    cull_options = Setting(CullOptions)

    def upcoming(self, minutes: int) -> list[dict[str, Any]]:
        now = utcnow()
        due = self.last_cycle.upcoming(until=now + timedelta(minutes=minutes))
        return [upcoming_json(when, judged, now) for when, judged in due]

    async def recent_cycles(self, limit: int) -> list[Cycle]:
        return await asyncio.to_thread(self.audit.recent_cycles, limit)

    async def recent_culls(self, limit: int, user: str | None = None) -> list[Cull]:
        return await asyncio.to_thread(self.audit.recent_culls, limit, user)

    async def extensions_used(self, user: str, server: str, started: datetime) -> int:
        return await asyncio.to_thread(self.audit.extensions_used, user, server, started)


class OwnServerViews(CullViews):
    """Views every hub user may open: each sees (and keeps) only their own servers."""

    hub = Setting(HubAPI)

    def check_hub_user(self, model: dict[str, Any]) -> dict[str, Any]:
        # the hub's access scope alone lets a user in; what they see is checked per view
        allowed: dict[str, Any] = HubOAuthenticated.check_hub_user(self, model)
        return allowed

    @property
    def manages_culling(self) -> bool:
        """The culler's admins see everyone's servers, the cycles and the audit trail."""
        return self.service.user_allowed(self.current_user)

    async def own_servers(self) -> list[dict[str, Any]]:
        """The current user's running servers as the policy judges them now."""
        me = self.current_user
        if me.get("kind", "user") != "user":
            return []
        user = await self.hub.get_user(me["name"])
        now = utcnow()
        rows = []
        for name, server in sorted((user.get("servers") or {}).items()):
            verdict = judge_server(user, name, server, self.policy, now)
            started = parse_time(server.get("started"))
            used = await self.extensions_used(user["name"], name, started) if started else 0
            rows.append(
                {
                    "server": name,
                    "idle": format_duration(verdict.idle) if verdict.idle is not None else "",
                    "stop_now": verdict.cull,
                    "due": as_utc(verdict.due),
                    "in": format_duration(verdict.due - now) if verdict.due else "",
                    "by": verdict.due_why or verdict.why,
                    "kept": used,
                    "refused": refuse_extension(verdict, used, self.policy.max_extensions),
                }
            )
        return rows


class StatusPage(OwnServerViews):
    """``/services/cull/``: your servers; for the culler's admins also the next run, recent
    cycles and culls, and what is due soon."""

    @authenticated
    async def get(self) -> None:
        minutes = self.int_argument("minutes", 60, minimum=1, maximum=MAX_MINUTES)
        admin_views: dict[str, Any] = {}
        if self.manages_culling:
            admin_views = {
                "cycles": [cycle_json(c) for c in await self.recent_cycles(10)],
                "culls": [cull_json(c) for c in await self.recent_culls(50)],
                "upcoming": self.upcoming(minutes),
            }
        self.render_page(
            "index.html",
            next_run=self.cull_job.next_run(),
            own_servers=await self.own_servers(),
            manages_culling=self.manages_culling,
            max_extensions=self.policy.max_extensions,
            minutes=minutes,
            duration=lambda s: format_duration(None if s is None else timedelta(seconds=s)),
            **admin_views,
        )

    @authenticated
    def post(self) -> None:
        """The page's "Run a cycle now" button, for the culler's admins."""
        if not self.manages_culling:
            raise HTTPError(403, "Only the culler's admins may run a cycle.")
        self.cull_job.run_soon()
        self.redirect(self.service.service_prefix, status=303)


class KeepRunning(OwnServerViews):
    """``POST keep`` (form: ``user``, ``server``): "keep it running", for your own server.

    It records activity on the server through the hub's activity API, so the culler's next
    re-check sees it; ``refuse_extension`` limits it (at most ``max_extensions`` per server
    run, never past max-age).
    """

    @authenticated
    async def post(self) -> None:
        me = self.current_user
        owner = self.get_body_argument("user", "")
        server_name = self.get_body_argument("server", "")
        if me.get("kind", "user") != "user" or owner != me["name"]:
            raise HTTPError(403, "You can keep only your own servers running.")
        if not self.policy.max_extensions:
            raise HTTPError(403, "Keeping servers running is switched off here.")
        label = f"server {server_name!r}" if server_name else "your default server"
        user = await self.hub.get_user(owner)
        server = (user.get("servers") or {}).get(server_name)
        started = parse_time((server or {}).get("started"))
        if server is None or started is None:
            raise HTTPError(404, f"You have no running {label.removeprefix('your ')}.")
        verdict = judge_server(user, server_name, server, self.policy, utcnow())
        used = await self.extensions_used(owner, server_name, started)
        refused = refuse_extension(verdict, used, self.policy.max_extensions)
        if refused:
            raise HTTPError(409, f"Cannot keep {label} running: {refused}.")
        now = utcnow().isoformat() + "Z"
        await self.hub.post(
            "users", owner, "activity", json={"servers": {server_name: {"last_activity": now}}}
        )
        await written(self.audit.add_extension, owner, server_name, started)
        self.redirect(self.service.service_prefix, status=303)


class StatusAPI(CullViews, APIHandler):
    """``GET api/status``: the culler's settings, next run and last cycle."""

    @authenticated
    async def get(self) -> None:
        last = await self.recent_cycles(1)
        self.write_json(
            {
                "next_run": self.cull_job.next_run(),
                "dry_run": self.cull_options.dry_run,
                "timeout": self.policy.timeout,
                "cull_every": self.cull_job.seconds,
                "max_age": self.policy.max_age,
                "last_cycle": cycle_json(last[0]) if last else None,
            }
        )


class CyclesAPI(CullViews, APIHandler):
    """``GET api/cycles?limit=``: recent cycles; ``POST``: run one now."""

    @authenticated
    async def get(self) -> None:
        limit = self.int_argument("limit", 50, minimum=1, maximum=MAX_ROWS)
        self.write_json([cycle_json(c) for c in await self.recent_cycles(limit)])

    @authenticated
    def post(self) -> None:
        self.cull_job.run_soon()
        self.write_json({"next_run": self.cull_job.next_run()}, status=202)


class CullsAPI(CullViews, APIHandler):
    """``GET api/culls?limit=&user=``: the audit trail, newest first."""

    @authenticated
    async def get(self) -> None:
        limit = self.int_argument("limit", 100, minimum=1, maximum=MAX_ROWS)
        culls = await self.recent_culls(limit, self.get_argument("user", None))
        self.write_json([cull_json(c) for c in culls])


class UpcomingAPI(CullViews, APIHandler):
    """``GET api/upcoming?minutes=``: servers that will be culled within that many minutes."""

    @authenticated
    def get(self) -> None:
        minutes = self.int_argument("minutes", 60, minimum=1, maximum=MAX_MINUTES)
        self.write_json(self.upcoming(minutes))
