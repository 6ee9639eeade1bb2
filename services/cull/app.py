"""The cull service: options (a drop-in for jupyterhub-idle-culler's), schedule, routes."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry
from tornado.web import StaticFileHandler
from traitlets import Bool, Dict, Integer, List, TraitError, Unicode, default, validate

from ..common.app import HubServiceApp
from ..common.hubapi import HubAPI, HubAPIError
from ..common.web import Route
from .audit import Audit
from .cycle import CullCycle, CullMetrics, CullOptions, CycleResult, LastCycle
from .handlers import CullsAPI, CyclesAPI, KeepRunning, StatusAPI, StatusPage, UpcomingAPI
from .mail import Mailer
from .policy import Policy, Rule

log = logging.getLogger(__name__)

#: The SMTP password's only source: a command line is visible to every local user.
SMTP_PASSWORD_ENV = "HUBSERVICES_SMTP_PASSWORD"
#: The page's script (cull.js), served to anyone as the stats dashboard's are: nothing secret.
STATIC_DIR = Path(__file__).parent / "static"


class Culler(HubServiceApp):
    """Stops idle servers, removes idle users if asked; shows each user their own servers."""

    service_name: ClassVar[str] = "cull"
    title: ClassVar[str] = "Idle culler"
    default_port: ClassVar[int] = 10101
    migrations: ClassVar[str] = "hubservices.cull.migrations"
    description = __doc__
    extra_aliases: ClassVar[dict[str, str]] = {"url": "HubServiceApp.hub_api_url"}

    # -- jupyterhub-idle-culler's options, same names, meanings and defaults -------------------

    timeout = Integer(600, min=0, help="Seconds a server may be idle before it is culled.").tag(
        config=True
    )
    cull_every = Integer(0, min=0, help="Seconds between cycles; 0 means half the timeout.").tag(
        config=True
    )
    max_age = Integer(
        0,
        min=0,
        help="Cull servers (and users) older than this many seconds, even if active; 0: off.",
    ).tag(config=True)
    cull_users = Bool(
        False, help="Also remove users whose servers are stopped and who are idle."
    ).tag(config=True)
    cull_admin_users = Bool(True, help="With cull_users, remove admin users too.").tag(config=True)
    cull_default_servers = Bool(True, help="Cull users' default servers.").tag(config=True)
    cull_named_servers = Bool(True, help="Cull users' named servers.").tag(config=True)
    remove_named_servers = Bool(
        False, help="Remove named servers when culling them, not only stop them."
    ).tag(config=True)
    concurrency = Integer(
        10,
        min=1,
        help="""Most server stops (and user removals) in flight at once. The re-checks of the
        next servers overlap them, so up to twice this many hub API requests are in flight.""",
    ).tag(config=True)
    api_page_size = Integer(
        200,
        min=0,
        help="""Users per page when listing; the hub caps it at its api_page_max_limit (200
        unless configured); 0: the hub's default page (50 unless configured).""",
    ).tag(config=True)
    ssl_enabled = Bool(
        False, help="Talk to the hub with its internal TLS certificates (internal_ssl)."
    ).tag(config=True)
    internal_certs_location = Unicode(
        "internal-ssl", help="The hub's internal_certs_location, when ssl_enabled."
    ).tag(config=True)

    # -- beyond the reference ----------------------------------------------------------------

    dry_run = Bool(False, help="Report what would be culled and why; stop nothing.").tag(
        config=True
    )
    policies = List(
        Dict(),
        help="""Rules by group, user, server name or user_options; the first that matches wins.
        Each is a dict with match keys (groups, users, servers, user_options) and what to do
        (timeout, max_age in seconds, or never=True). See docs/cull.md.""",
    ).tag(config=True)
    busy_kernels = Bool(
        False, help="Ask a server before culling it and keep it while a kernel is busy."
    ).tag(config=True)
    busy_kernel_cap = Integer(
        86400, min=0, help="A busy server is culled anyway once idle this many seconds; 0: never."
    ).tag(config=True)
    server_url = Unicode(
        help="""The hub's public URL: where single-user servers answer (busy_kernels), and the
        base of the link in warning e-mails."""
    ).tag(config=True)
    stop_timeout = Integer(
        300, min=1, help="Seconds to wait for a slow stop before giving up removing its user."
    ).tag(config=True)
    warn_before = Integer(
        0, min=0, help="Warn this many seconds before a server is culled; 0: no warnings."
    ).tag(config=True)
    warn_command = List(
        Unicode(),
        help="Command run to warn (CULL_USER, CULL_SERVER, CULL_DUE, CULL_WHY in its env).",
    ).tag(config=True)
    warn_url = Unicode(help="URL that receives a JSON POST to warn.").tag(config=True)
    max_extensions = Integer(
        3,
        min=0,
        help="""Times a user may press "keep it running" for one server run (it counts as
        activity; it never moves max-age); 0: no button.""",
    ).tag(config=True)

    # -- warning e-mails (the password only from $HUBSERVICES_SMTP_PASSWORD) ------------------

    smtp_host = Unicode(help="SMTP server for warning e-mails; empty: no e-mails.").tag(config=True)
    smtp_port = Integer(25, help="SMTP port (587 with smtp_starttls, usually).").tag(config=True)
    smtp_starttls = Bool(False, help="Upgrade the SMTP connection with STARTTLS.").tag(config=True)
    smtp_username = Unicode(
        help="SMTP login; its password comes from $HUBSERVICES_SMTP_PASSWORD only."
    ).tag(config=True)
    smtp_from = Unicode(help="The warning e-mails' From address.").tag(config=True)
    mail_to = Unicode(
        "", help="Each user's address, from their hub name: e.g. '{username}@example.org'."
    ).tag(config=True)

    @validate("policies")
    def _valid_policies(self, proposal: dict[str, Any]) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = proposal["value"]
        try:
            _rules(value)
        except ValueError as e:
            raise TraitError(str(e)) from None
        return value

    def check_config(self) -> None:
        if self.busy_kernels and not self.server_url:
            raise TraitError("busy_kernels needs server_url (the hub's public URL)")
        if self.smtp_host:
            missing = [n for n in ("smtp_from", "mail_to", "server_url") if not getattr(self, n)]
            if missing:
                raise TraitError(f"smtp_host (warning e-mails) needs {', '.join(missing)} too")
            if "{username}" not in self.mail_to:
                raise TraitError(f"mail_to must contain {{username}}, not {self.mail_to!r}")
            if not self.warn_before:
                raise TraitError("smtp_host sends warnings: set warn_before (seconds) too")

    def mailer(self) -> Mailer | None:
        """Warning e-mails as configured, or None."""
        if not self.smtp_host:
            return None
        return Mailer(
            host=self.smtp_host,
            port=self.smtp_port,
            sender=self.smtp_from,
            address_template=self.mail_to,
            page_url=self.server_url.rstrip("/") + self.service_prefix,
            starttls=self.smtp_starttls,
            username=self.smtp_username,
            password=os.environ.get(SMTP_PASSWORD_ENV, ""),
        )

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        if self.ssl_enabled:
            certs = Path(self.internal_certs_location)
            self.ssl_keyfile = str(certs / "hub-internal" / "hub-internal.key")
            self.ssl_certfile = str(certs / "hub-internal" / "hub-internal.crt")
            self.ssl_client_ca = str(certs / "hub-ca" / "hub-ca.crt")

    @property
    def cull_interval(self) -> int:
        """Seconds between cycles: ``cull_every``, else half the timeout (as idle-culler)."""
        return self.cull_every or max(self.timeout // 2, 1)

    def rules(self) -> tuple[Rule, ...]:
        """The policies option as rules (checked when it was set)."""
        return _rules(self.policies)

    def policy(self) -> Policy:
        return Policy(
            timeout=self.timeout,
            max_age=self.max_age,
            cull_users=self.cull_users,
            cull_admin_users=self.cull_admin_users,
            cull_default_servers=self.cull_default_servers,
            cull_named_servers=self.cull_named_servers,
            rules=self.rules(),
            max_extensions=self.max_extensions,
        )

    def options(self) -> CullOptions:
        return CullOptions(
            concurrency=self.concurrency,
            remove_named_servers=self.remove_named_servers,
            dry_run=self.dry_run,
            busy_kernels=self.busy_kernels,
            busy_kernel_cap=self.busy_kernel_cap,
            server_url=self.server_url,
            stop_timeout=self.stop_timeout,
            warn_before=self.warn_before,
            warn_command=tuple(self.warn_command),
            warn_url=self.warn_url,
            mailer=self.mailer(),
        )

    def required_scopes(self) -> list[str]:
        scopes = {"list:users", "read:users:activity", "read:servers", "delete:servers"}
        if any(rule.groups for rule in self.rules()):
            scopes.add("read:users:groups")
        if self.cull_users:
            scopes.add("admin:users")  # delete users; read their admin flag and creation time
        if self.max_extensions:
            scopes.add("users:activity")  # "keep it running" records activity on the server
        if self.busy_kernels:
            # issue (and revoke) a one-minute token for each server asked about its kernels,
            # so that our own token never reaches a server; we hold no access:servers at all
            scopes.add("tokens")
        return sorted(scopes)

    # -- running -----------------------------------------------------------------------------

    def make_hub_api(self, **options: Any) -> HubAPI:
        return super().make_hub_api(
            concurrency=2 * self.concurrency, page_size=self.api_page_size or None, **options
        )

    def make_metrics(self) -> CollectorRegistry:
        registry = super().make_metrics()
        self.metrics = CullMetrics(registry)
        return registry

    @default("shutdown_grace")
    def _time_for_stops(self) -> float:
        return 10.0

    async def on_start(self) -> None:
        self.audit = Audit(self.db)
        self.running_task: asyncio.Task[CycleResult] | None = None
        self.last_cycle = LastCycle()
        self.cull_job = self.scheduler.add_periodic(self.cull_once, self.cull_interval, name="cull")
        log.info(
            "Culling servers idle %ss (max age %ss) every %ss%s",
            self.timeout,
            self.max_age,
            self.cull_interval,
            "; DRY RUN" if self.dry_run else "",
        )

    async def run_cycle(self) -> CycleResult:
        """One cycle with the current options; its result is what the status page shows.

        The cycle runs as a task of its own, which shutdown (:meth:`on_stop`) waits for:
        the scheduler's shutdown cancels its jobs' tasks, and must not cancel the stops.
        """
        self.running_cycle = CullCycle(
            self.hub, self.policy(), self.options(), self.audit, self.metrics
        )
        self.running_task = asyncio.create_task(self.running_cycle.run())
        self.last_cycle.result = await asyncio.shield(self.running_task)
        return self.last_cycle.result

    async def cull_once(self) -> None:
        """The scheduler's job: one cycle; a failed cycle is logged and the next one goes on."""
        try:
            await self.run_cycle()
        except HubAPIError as e:
            log.error("Cull cycle failed: %s; next try at %s", e, self.cull_job.next_run())
        except asyncio.CancelledError:
            # the scheduler's shutdown cancels this job; the cycle itself is on_stop's to end
            log.debug("Cull job cancelled by shutdown")

    async def on_stop(self) -> None:
        """Let a running cycle finish the stops in flight, sending no new ones.

        Past ``shutdown_grace`` seconds the cycle is cancelled and records itself as
        interrupted; only then are the hub client and database closed.
        """
        task = self.running_task
        if task is None or task.done():
            return
        self.running_cycle.close()
        log.info("Shutting down: waiting up to %ss for the stops in flight", self.shutdown_grace)
        done, _ = await asyncio.wait({task}, timeout=self.shutdown_grace)
        if done:
            failure = None if task.cancelled() else task.exception()  # nobody else awaits it now
            if failure:
                log.error("Cull cycle failed while shutting down: %s", failure)
            return
        log.warning(
            "Cull cycle interrupted by shutdown: stops still in flight after %ss",
            self.shutdown_grace,
        )
        task.cancel()
        await asyncio.wait({task})

    def web_settings(self) -> dict[str, Any]:
        return {
            "hub": self.hub,
            "audit": self.audit,
            "cull_job": self.cull_job,
            "last_cycle": self.last_cycle,
            "policy": self.policy(),
            "cull_options": self.options(),
        }

    def service_handlers(self) -> list[Route]:
        return [
            ("", StatusPage),
            ("api/status", StatusAPI),
            ("api/cycles", CyclesAPI),
            ("api/culls", CullsAPI),
            ("api/upcoming", UpcomingAPI),
            ("keep", KeepRunning),
            ("assets/(.*)", StaticFileHandler, {"path": str(STATIC_DIR)}),
        ]


def _rules(policies: list[dict[str, Any]]) -> tuple[Rule, ...]:
    """The policies option as rules; ``ValueError`` naming a bad one."""
    return tuple(Rule.from_config(i, p) for i, p in enumerate(policies))
