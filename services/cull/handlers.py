"""The culler's status page and JSON API, for hub admins; thin views over the app's state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tornado.web import authenticated

from ..common.web import APIHandler, BaseHandler
from .audit import as_utc
from .models import Cull, Cycle
from .policy import Judged, format_duration

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


def upcoming_json(judged: Judged, now: datetime) -> dict[str, Any]:
    return {
        "user": judged.user["name"],
        "server": judged.server_name,
        "due": judged.verdict.due,
        "in": format_duration(judged.verdict.due - now),
        "why": judged.verdict.why,
        "rule": judged.verdict.rule,
    }


class CullHandlerMixin:
    """What both the page and the API read from the culler."""

    def upcoming(self: Any, minutes: int) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        horizon = now + timedelta(minutes=minutes)
        return [upcoming_json(j, now) for j in self.service.upcoming() if j.verdict.due <= horizon]


class StatusPage(CullHandlerMixin, BaseHandler):
    """``/services/cull/``: next run, recent cycles and culls, what is due soon."""

    @authenticated
    def get(self) -> None:
        minutes = self.int_argument("minutes", 60, minimum=1, maximum=MAX_MINUTES)
        self.render_page(
            "index.html",
            next_run=self.service.scheduler.next_run("cull"),
            cycles=[cycle_json(c) for c in self.service.audit.recent_cycles(10)],
            culls=[cull_json(c) for c in self.service.audit.recent_culls(50)],
            upcoming=self.upcoming(minutes),
            minutes=minutes,
            duration=lambda s: format_duration(None if s is None else timedelta(seconds=s)),
        )

    @authenticated
    def post(self) -> None:
        """The page's "Run a cycle now" button."""
        self.service.run_soon()
        self.redirect(self.service.service_prefix, status=303)


class StatusAPI(CullHandlerMixin, APIHandler):
    """``GET api/status``: the culler's settings, next run and last cycle."""

    @authenticated
    def get(self) -> None:
        last = self.service.audit.recent_cycles(1)
        self.write_json(
            {
                "next_run": self.service.scheduler.next_run("cull"),
                "dry_run": self.service.dry_run,
                "timeout": self.service.timeout,
                "cull_every": self.service.cull_interval,
                "max_age": self.service.max_age,
                "last_cycle": cycle_json(last[0]) if last else None,
            }
        )


class CyclesAPI(APIHandler):
    """``GET api/cycles?limit=``: recent cycles; ``POST``: run one now."""

    @authenticated
    def get(self) -> None:
        limit = self.int_argument("limit", 50, minimum=1, maximum=MAX_ROWS)
        self.write_json([cycle_json(c) for c in self.service.audit.recent_cycles(limit)])

    @authenticated
    def post(self) -> None:
        self.service.run_soon()
        self.write_json({"next_run": self.service.scheduler.next_run("cull")}, status=202)


class CullsAPI(APIHandler):
    """``GET api/culls?limit=&user=``: the audit trail, newest first."""

    @authenticated
    def get(self) -> None:
        limit = self.int_argument("limit", 100, minimum=1, maximum=MAX_ROWS)
        culls = self.service.audit.recent_culls(limit, self.get_argument("user", None))
        self.write_json([cull_json(c) for c in culls])


class UpcomingAPI(CullHandlerMixin, APIHandler):
    """``GET api/upcoming?minutes=``: servers that will be culled within that many minutes."""

    @authenticated
    def get(self) -> None:
        minutes = self.int_argument("minutes", 60, minimum=1, maximum=MAX_MINUTES)
        self.write_json(self.upcoming(minutes))
