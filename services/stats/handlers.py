"""The stats service's routes: dashboard page, its data, usage exports, a user's sessions.

Handlers only parse, call the store in a thread (a year's report must not stall scrapes) and
write; the answers come from :mod:`.store` and :mod:`.logic`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from typing import Any

from tornado.web import HTTPError, authenticated

from ..common.csvsafe import csv_chunks
from ..common.timeutil import utcnow
from ..common.web import APIHandler, BaseHandler, Setting
from . import logic
from .store import RANGES, StatsStore

#: Report rows per piece of a streamed export (about 40 kB of CSV).
ROWS_PER_CHUNK = 1000


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
    """``GET api/usage?from=&to=&group=&user=&format=json|csv``: per-user usage.

    The answer streams: rows come from the store in batches and go out a chunk at a time
    (``flush``), each step in a thread, so an export of every user neither holds them all in
    the service nor stalls other requests.
    """

    @authenticated
    async def get(self) -> None:
        args = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        now = utcnow()
        try:
            query = logic.parse_usage_query(args, now.date())
        except ValueError as e:
            raise HTTPError(400, str(e)) from None
        rows = self.store.usage_rows(query, now)
        chunks = usage_export(query, rows)
        if query.format == "json":
            self.set_header("Content-Type", "application/json; charset=UTF-8")
        else:
            first, last = query.start.date(), (query.end - logic.DAY).date()
            self.set_header("Content-Type", "text/csv; charset=UTF-8")
            self.set_header(
                "Content-Disposition", f'attachment; filename="usage-{first}-{last}.csv"'
            )
        try:
            # the first chunk runs the queries: an error there is still a JSON error answer
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                self.write(chunk)
                await self.flush()
        finally:
            await asyncio.to_thread(_close, chunks, rows)
        self.finish()


def usage_export(query: logic.UsageQuery, rows: Iterable[logic.UserUsage]) -> Iterator[str]:
    """``api/usage``'s body in pieces: CSV (formula cells neutralized) or JSON, the same bytes
    as encoding the whole report at once."""
    if query.format == "csv":
        yield from csv_chunks(logic.USAGE_FIELDS, (r.as_dict() for r in rows), ROWS_PER_CHUNK)
        return
    head = {
        "from": query.start.date().isoformat(),
        "to": (query.end - logic.DAY).date().isoformat(),
        "user": query.user,
        "group": query.group,
    }
    piece, separator = json.dumps(head)[:-1] + ', "users": [', ""
    for i, row in enumerate(rows, 1):
        piece += separator + json.dumps(row.as_dict())
        separator = ", "
        if i % ROWS_PER_CHUNK == 0:
            yield piece
            piece = ""
    yield piece + "]}"


def _close(*iterators: Iterator[Any]) -> None:
    """End the export's generators, and with them its database transaction (in a thread:
    closing may talk to the database)."""
    for iterator in iterators:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


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
