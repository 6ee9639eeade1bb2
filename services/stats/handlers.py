"""The stats service's routes: dashboard page, its data, usage exports, a user's sessions.

Handlers only parse, call the store in a thread (a year's report must not stall scrapes) and
write; the answers come from :mod:`.store` and :mod:`.logic`.
"""

from __future__ import annotations

import asyncio

from tornado.web import HTTPError, authenticated

from ..common.csvsafe import csv_text
from ..common.timeutil import utcnow
from ..common.web import APIHandler, BaseHandler, Setting
from . import logic
from .store import RANGES, StatsStore


class StatsViews(BaseHandler):
    """What the stats service hands its routes (see ``Stats.web_settings``): the store."""

    store = Setting(StatsStore)


class DashboardHandler(BaseHandler):
    """``GET /services/stats/``: the dashboard page; its script fetches ``api/dashboard``."""

    @authenticated
    def get(self) -> None:
        self.render_page("index.html", ranges=list(RANGES))


class DashboardDataHandler(StatsViews, APIHandler):
    """``GET api/dashboard?range=day|week|semester``: what the dashboard draws."""

    @authenticated
    async def get(self) -> None:
        range_name = self.get_query_argument("range", "week")
        if range_name not in RANGES:
            raise HTTPError(400, f"range must be one of {', '.join(RANGES)}, not {range_name!r}")
        data = await asyncio.to_thread(self.store.dashboard, range_name, utcnow())
        self.write_json(data)


class UsageHandler(StatsViews, APIHandler):
    """``GET api/usage?from=&to=&group=&user=&format=json|csv``: per-user usage."""

    @authenticated
    async def get(self) -> None:
        args = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        now = utcnow()
        try:
            query = logic.parse_usage_query(args, now.date())
        except ValueError as e:
            raise HTTPError(400, str(e)) from None
        rows = await asyncio.to_thread(self.store.usage, query, now)
        first, last = query.start.date(), (query.end - logic.DAY).date()
        if query.format == "json":
            self.write_json(
                {
                    "from": first.isoformat(),
                    "to": last.isoformat(),
                    "user": query.user,
                    "group": query.group,
                    "users": [r.as_dict() for r in rows],
                }
            )
            return
        self.set_header("Content-Type", "text/csv; charset=UTF-8")
        self.set_header("Content-Disposition", f'attachment; filename="usage-{first}-{last}.csv"')
        self.finish(csv_text(logic.USAGE_FIELDS, (r.as_dict() for r in rows)))


class UserSessionsHandler(StatsViews, APIHandler):
    """``GET api/users/<name>/sessions``: one user's server runs, newest first.

    The name is one URL-quoted path segment (``a%20b``, ``dana%231``); tornado unquotes it.
    """

    @authenticated
    async def get(self, name: str) -> None:
        sessions = await asyncio.to_thread(self.store.user_sessions, name)
        if not sessions and not await asyncio.to_thread(self.store.known_user, name):
            raise HTTPError(404, f"No usage recorded for user {name!r}.")
        self.write_json({"user": name, "sessions": sessions})
