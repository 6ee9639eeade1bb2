"""The stats service application."""

from typing import ClassVar

from ..common.app import HubServiceApp
from ..common.web import LandingHandler


class Stats(HubServiceApp):
    """Keeps the hub's usage history; its dashboard is for hub admins and ``allowed_groups``."""

    service_name: ClassVar[str] = "stats"
    title: ClassVar[str] = "Hub usage"
    default_port: ClassVar[int] = 10102
    description = __doc__

    def service_handlers(self) -> list[tuple]:
        return [("", LandingHandler)]
