"""The stats service application: options, tables, the poller and the routes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry
from tornado.web import StaticFileHandler
from traitlets import Float, Integer, TraitError, Unicode, validate
from traitlets import Set as SetTrait

from ..common.app import HubServiceApp
from ..common.hubapi import HubAPI
from ..common.web import Route
from .handlers import DashboardDataHandler, DashboardHandler, UsageHandler, UserSessionsHandler
from .metrics import PollMetrics, SnapshotCollector
from .poller import Poller
from .store import StatsStore

STATIC_DIR = Path(__file__).parent / "static"
#: The scheduler job's name.
POLL_JOB = "poll"


class Stats(HubServiceApp):
    """Keeps the hub's usage history; its dashboard is for hub admins and ``allowed_groups``."""

    service_name: ClassVar[str] = "stats"
    title: ClassVar[str] = "Hub usage"
    default_port: ClassVar[int] = 10102
    migrations: ClassVar[str] = "hubservices.stats.migrations"
    description = __doc__

    poll_interval = Float(60.0, help="Seconds between two polls of the hub's users.").tag(
        config=True
    )

    @validate("poll_interval")
    def _check_poll_interval(self, proposal: dict[str, Any]) -> float:
        value: float = proposal["value"]
        if value <= 0:
            raise TraitError(f"poll_interval must be positive, not {value}")
        return value

    sync_interval = Float(
        3600.0,
        min=0,
        help="""Seconds between two full syncs of every user and group membership. The polls
        in between ask only for users with a running or pending server, so sessions stay exact;
        users without a server (their activity, new and deleted users) and group changes of
        users without a server show at the next full sync. 0: every poll is a full sync.""",
    ).tag(config=True)

    activity_bucket = Integer(
        900, help="Seconds per activity bucket: active time is counted in these steps."
    ).tag(config=True)

    @validate("activity_bucket")
    def _check_activity_bucket(self, proposal: dict[str, Any]) -> int:
        value: int = proposal["value"]
        if value < 60 or 86400 % value:
            raise TraitError(f"activity_bucket must divide a day and be >= 60, not {value}")
        return value

    retention_days = Integer(
        400,
        min=0,
        help="Days raw sessions and activity are kept after their daily roll-up (0: forever).",
    ).tag(config=True)

    metrics_groups = SetTrait(
        Unicode(), help="Hub groups that get per-group metrics (opt-in; no per-user labels)."
    ).tag(config=True)

    poller: Poller | None = None

    page_size = Integer(
        200,
        min=0,
        help="""Users per page when listing the hub's users (the hub caps it at its
        api_page_max_limit); 0: the hub's default page.""",
    ).tag(config=True)

    def make_hub_api(self, **options: Any) -> HubAPI:
        return super().make_hub_api(page_size=self.page_size or None, **options)

    def required_scopes(self) -> list[str]:
        """What the poller reads: every user with activity, servers and groups."""
        return ["list:users", "read:users:activity", "read:users:groups", "read:servers"]

    def service_handlers(self) -> list[Route]:
        return [
            ("", DashboardHandler),
            ("api/dashboard", DashboardDataHandler),
            ("api/usage", UsageHandler),
            ("api/users/([^/]+)/sessions", UserSessionsHandler),
            ("assets/(.*)", StaticFileHandler, {"path": str(STATIC_DIR)}),
        ]

    def make_metrics(self) -> CollectorRegistry:
        registry = super().make_metrics()
        self.poll_metrics = PollMetrics(registry)
        registry.register(SnapshotCollector(lambda: self.poller.last if self.poller else None))
        return registry

    async def on_start(self) -> None:
        retention = timedelta(days=self.retention_days) if self.retention_days else None
        self.store = StatsStore(self.db, bucket_seconds=self.activity_bucket, retention=retention)
        self.poller = Poller(
            self.hub,
            self.store,
            self.poll_metrics,
            interval=self.poll_interval,
            sync_interval=self.sync_interval,
            groups=set(self.metrics_groups),
        )
        self.scheduler.add_periodic(self.poller.poll, self.poll_interval, name=POLL_JOB)

    async def on_stop(self) -> None:
        """A poll cancelled by SIGTERM may be committing: let it (within the grace period)."""
        if self.poller is not None:
            await self.poller.finish()

    def web_settings(self) -> dict[str, Any]:
        return {"store": self.store}
