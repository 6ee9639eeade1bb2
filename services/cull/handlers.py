"""The culler's status page and JSON API, for hub admins: thin views over what it hands them."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from tornado.web import authenticated

from ..common.scheduler import ScheduledJob
from ..common.timeutil import as_utc, utcnow
from ..common.web import APIHandler, BaseHandler, Setting
from .audit import Audit
from .cycle import CullOptions, LastCycle
from .models import Cull, Cycle
from .policy import Judged, Policy, format_duration

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


class StatusPage(CullViews):
    """``/services/cull/``: next run, recent cycles and culls, what is due soon."""

    @authenticated
    async def get(self) -> None:
        minutes = self.int_argument("minutes", 60, minimum=1, maximum=MAX_MINUTES)
        self.render_page(
            "index.html",
            next_run=self.cull_job.next_run(),
            cycles=[cycle_json(c) for c in await self.recent_cycles(10)],
            culls=[cull_json(c) for c in await self.recent_culls(50)],
            upcoming=self.upcoming(minutes),
            minutes=minutes,
            duration=lambda s: format_duration(None if s is None else timedelta(seconds=s)),
        )

    @authenticated
    def post(self) -> None:
        """The page's "Run a cycle now" button."""
        self.cull_job.run_soon()
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
