"""The cull service application."""

from typing import ClassVar

from ..common.app import HubServiceApp
from ..common.web import LandingHandler


class Culler(HubServiceApp):
    """Stops idle servers; its status page is for hub admins."""

    service_name: ClassVar[str] = "cull"
    title: ClassVar[str] = "Idle culler"
    default_port: ClassVar[int] = 10101
    description = __doc__

    def service_handlers(self) -> list[tuple]:
        return [("", LandingHandler)]
