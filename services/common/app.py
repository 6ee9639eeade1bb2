"""The traitlets Application every service is: configuration, the web server, clean shutdown.

A service subclasses :class:`HubServiceApp`, declares its options as ``.tag(config=True)`` traits,
its tables' migrations in ``migrations``, its routes in :meth:`HubServiceApp.service_handlers`,
what those routes may use in :meth:`HubServiceApp.web_settings`, its access rule in
:meth:`HubServiceApp.user_allowed` and its objects and periodic jobs in
:meth:`HubServiceApp.on_start`. The lifecycle (hub client, metrics, database and migrations,
scheduler, web server, clean stop) is this module's, the same for every service.
Every option can be set the JupyterHub way: ``--Culler.timeout=3600``, the short
``--timeout=3600`` (``--cull-users`` / ``--cull-users=false`` for booleans), or a config file
given with ``--config``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuth
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from tornado.httpserver import HTTPServer
from tornado.web import Application as TornadoApplication
from traitlets import Bool, Float, Integer, TraitError, Unicode, default, validate
from traitlets import Set as SetTrait
from traitlets.config import Application, Configurable
from traitlets.config.loader import KVArgParseConfigLoader

from .. import __version__
from .access import PEERS_ENV, AccessRule, Peer, parse_peers
from .cli import CONFIG_ERROR, StrictArgLoader, secret_on_command_line, short_options
from .db import Database
from .files import private_dir
from .hubapi import HubAPI
from .scheduler import Scheduler
from .web import NotFoundHandler, Route, common_handlers, log_request

COMMON_DIR = Path(__file__).parent
SHUTDOWN_GRACE_SECONDS = 4.0
#: After ``shutdown_grace``, what :meth:`HubServiceApp.on_stop` has to record what it cut short.
INTERRUPT_SECONDS = 3.0
HUB_STATUS_SECONDS = 5.0
HUB_CHECK_TIMEOUT = 3.0
#: The hub scope that reads every service's /metrics: a JupyterHub custom scope (defined in
#: c.JupyterHub.custom_scopes) that no default role holds, so students, who may reach every
#: service, cannot read its metrics.
METRICS_SCOPE = "custom:hubservices:metrics"
#: Where tornado serves the common static files, relative to the service prefix.
STATIC_PREFIX = "static/"


def _slashed(prefix: str) -> str:
    """A URL prefix with exactly one slash at each end, as tornado routes need."""
    return "/" + prefix.strip("/") + "/"


class HubServiceApp(Application):
    """A JupyterHub service: hub-authenticated tornado app under the hub's proxy route.

    Defaults come from the environment the hub gives a managed service
    (``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_PREFIX``,
    ``JUPYTERHUB_SERVICE_URL``), so a service started by the hub needs no options at all.
    """

    #: The service's name in ``c.JupyterHub.services``; also its default proxy route.
    service_name: ClassVar[str] = ""
    #: Port used when ``JUPYTERHUB_SERVICE_URL`` is not set (service run by hand).
    default_port: ClassVar[int] = 10100
    #: Landing-page title.
    title: ClassVar[str] = ""
    #: More short options, e.g. ``{"url": "HubServiceApp.hub_api_url"}`` for a drop-in's names.
    extra_aliases: ClassVar[dict[str, str]] = {}
    #: The alembic migrations package of the service's tables (``""``: it keeps none). Its
    #: version table is ``alembic_version_<service_name>``, so services can share a database.
    migrations: ClassVar[str] = ""

    #: Set by :meth:`open`: the hub client, the database (if ``migrations``), the scheduler.
    hub: HubAPI
    db: Database
    scheduler: Scheduler

    version = __version__

    @default("log_level")
    def _info_by_default(self) -> int:
        """What was culled, polled or graded is news an admin reads in the hub's log."""
        return logging.INFO

    log_format = Unicode(
        "[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s] %(message)s",
        help="Format of log lines (logging's %-style), like the hub's.",
    ).tag(config=True)

    def get_default_logging_config(self) -> dict[str, Any]:
        """The application's handler also takes what reaches the root logger: the modules'
        ``hubservices.*`` loggers at ``log_level``, other libraries' warnings."""
        config: dict[str, Any] = super().get_default_logging_config()
        if "loggers" in config:
            config["loggers"]["hubservices"] = {"level": "DEBUG"}
            config["root"] = {"level": "WARNING", "handlers": ["console"]}
        return config

    config_file = Unicode(
        "",
        help="Load this config file (a Python file like jupyterhub_config.py, or JSON).",
    ).tag(config=True)

    hub_api_url = Unicode(help="The hub's REST API URL ($JUPYTERHUB_API_URL).").tag(config=True)

    @default("hub_api_url")
    def _default_hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    api_token = Unicode(
        help="The service's hub API token ($JUPYTERHUB_API_TOKEN). Config file or env only."
    ).tag(config=True)

    @default("api_token")
    def _default_api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    service_prefix = Unicode(
        help="URL prefix the proxy routes to this service ($JUPYTERHUB_SERVICE_PREFIX)."
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self) -> str:
        return _slashed(
            os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{self.service_name}/")
        )

    @validate("service_prefix")
    def _slashed_prefix(self, proposal: dict[str, Any]) -> str:
        return _slashed(proposal["value"])

    bind_url = Unicode(help="URL this service listens on ($JUPYTERHUB_SERVICE_URL).").tag(
        config=True
    )

    @default("bind_url")
    def _default_bind_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", f"http://127.0.0.1:{self.default_port}")

    @validate("bind_url")
    def _check_bind_url(self, proposal: dict[str, Any]) -> str:
        value: str = proposal["value"]
        url = urlparse(value)
        if url.scheme not in {"http", "https"} or not url.port:
            raise TraitError(f"bind_url must look like http://host:port, not {value!r}")
        return value

    data_dir = Unicode(
        help="Directory for this service's files (cookie secret, SQLite database); created 0700."
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return os.environ.get("HUBSERVICES_DATA_DIR", os.getcwd())

    db_url = Unicode(
        help="""Database for the service's records (any SQLAlchemy URL; default
        $HUBSERVICES_DATABASE_URL, else hubservices.sqlite in data_dir). Services sharing
        one database see each other's records: stats shows the culler's culls."""
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        default = f"sqlite:///{Path(self.data_dir).resolve() / 'hubservices.sqlite'}"
        return os.environ.get("HUBSERVICES_DATABASE_URL", default)

    cookie_secret_file = Unicode(
        help="File holding the cookie secret, created with mode 0600, so a restart logs nobody out."
    ).tag(config=True)

    @default("cookie_secret_file")
    def _default_cookie_secret_file(self) -> str:
        return str(Path(self.data_dir) / f"{self.service_name}_cookie_secret")

    allow_admin = Bool(True, help="Hub admins may use this service.").tag(config=True)
    allowed_users = SetTrait(Unicode(), help="Hub users who may use this service.").tag(config=True)
    allowed_groups = SetTrait(
        Unicode(), help="Members of these hub groups may use this service."
    ).tag(config=True)

    metrics_scope = Unicode(
        METRICS_SCOPE,
        help="""Hub scope a token needs to scrape /metrics; hub admins need only access to
        this service. The default is defined by hubservices-config's snippet
        (c.JupyterHub.custom_scopes) and granted to no one but the roles you give it.""",
    ).tag(config=True)

    metrics_allow_anonymous = Bool(
        False, help="Serve /metrics without authentication (only behind a trusted network)."
    ).tag(config=True)

    shutdown_grace = Float(
        SHUTDOWN_GRACE_SECONDS,
        min=0,
        help="""Seconds background work (a cull cycle's stops in flight) may take to finish on
        SIGTERM or SIGINT before it is interrupted. A hub-managed service is killed 15 s after
        the hub's SIGINT (LocalProcessSpawner's interrupt and term timeouts).""",
    ).tag(config=True)

    hub_timeout = Integer(30, help="Seconds before a hub API request times out.").tag(config=True)
    hub_retries = Integer(
        6, help="Retries of a failed hub API request, with exponential backoff (about a minute)."
    ).tag(config=True)

    ssl_keyfile = Unicode(help="Internal TLS key ($JUPYTERHUB_SSL_KEYFILE).").tag(config=True)
    ssl_certfile = Unicode(help="Internal TLS cert ($JUPYTERHUB_SSL_CERTFILE).").tag(config=True)
    ssl_client_ca = Unicode(help="Internal TLS CA ($JUPYTERHUB_SSL_CLIENT_CA).").tag(config=True)

    @default("ssl_keyfile")
    def _default_ssl_keyfile(self) -> str:
        return os.environ.get("JUPYTERHUB_SSL_KEYFILE", "")

    @default("ssl_certfile")
    def _default_ssl_certfile(self) -> str:
        return os.environ.get("JUPYTERHUB_SSL_CERTFILE", "")

    @default("ssl_client_ca")
    def _default_ssl_client_ca(self) -> str:
        return os.environ.get("JUPYTERHUB_SSL_CLIENT_CA", "")

    # -- command line -----------------------------------------------------------------------

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The hub's other services (from ``hubservices-config``), for the page header's links.
        self.peers: list[Peer] = []
        self.aliases, self.flags = short_options(self._short_option_classes(), self.extra_aliases)

    def _short_option_classes(self) -> list[type[Configurable]]:
        """This app's class chain up to HubServiceApp, plus its configurable ``classes``."""
        chain: list[type[Configurable]] = [
            c for c in type(self).__mro__ if issubclass(c, HubServiceApp)
        ]
        return chain + list(self.classes)

    def _create_loader(
        self,
        argv: list[str] | None,
        aliases: dict[str, Any],
        flags: dict[str, Any],
        classes: Any,
    ) -> KVArgParseConfigLoader:
        return StrictArgLoader(
            argv, aliases, flags, classes=classes, log=self.log, subcommands=self.subcommands
        )

    def parse_command_line(self, argv: list[str] | None = None) -> None:
        """Refuse what is not an option, too: a stray word is a mistake, not a wish; and
        secrets, which every local user could read in ``ps``."""
        super().parse_command_line(argv)
        secret = secret_on_command_line(self.cli_config)
        if secret:
            self.log.critical("%s", secret)  # the line names the option, never its value
            self.exit(CONFIG_ERROR)
        if self.extra_args:
            self.log.critical("Unexpected argument: %s", " ".join(self.extra_args))
            self.exit(CONFIG_ERROR)

    def exit(self, exit_status: int | str | None = 0) -> None:
        """Bad configuration exits ``CONFIG_ERROR``, as command-line tools do: traitlets' own
        config errors (``catch_config_error``) exit 1, which this maps to it."""
        super().exit(CONFIG_ERROR if exit_status == 1 else exit_status)

    def initialize(self, argv: list[str] | None = None) -> None:
        """Load and check the configuration; make sure there is a token to talk to the hub with."""
        self.load_config(argv)
        try:
            self.check_config()
        except TraitError as e:
            self.log.critical("Bad config: %s", e)
            self.exit(CONFIG_ERROR)
        try:
            self.peers = parse_peers(os.environ.get(PEERS_ENV, ""))
        except ValueError as e:
            self.log.critical("%s", e)
            self.exit(CONFIG_ERROR)
        if not self.api_token:
            self.log.critical(
                "No hub API token: run me as a JupyterHub service or set $JUPYTERHUB_API_TOKEN"
            )
            self.exit(CONFIG_ERROR)

    def load_config(self, argv: list[str] | None = None) -> None:
        """Parse the command line, then the config file, which the command line overrides."""
        self.parse_command_line(argv)
        if self.config_file:
            if not Path(self.config_file).is_file():
                self.log.critical("Config file not found: %s", self.config_file)
                self.exit(CONFIG_ERROR)
            cli_config = self.config
            path = Path(self.config_file)
            self.load_config_file(path.name, path=str(path.parent.resolve()))
            self.update_config(cli_config)

    # -- what a service provides ------------------------------------------------------------

    def check_config(self) -> None:
        """Checks that involve several options, once all are loaded; ``TraitError`` saying
        what is wrong. One option's own rules are its ``@validate``, checked as it is set."""

    def service_handlers(self) -> list[Route]:
        """Routes relative to the service prefix, e.g. ``("", StatusPage)``."""
        return []

    def web_settings(self) -> dict[str, Any]:
        """What the service's handlers may use (its store, its audit...), by setting name;
        they read each through a :class:`~hubservices.common.web.Setting`. Called after
        :meth:`on_start`."""
        return {}

    def required_scopes(self) -> list[str]:
        """Hub scopes this service's token needs with the current options (for its role)."""
        return []

    def access_rule(self) -> AccessRule:
        """Who may use this service, as data (also given to the other services' headers)."""
        return AccessRule(
            admin=self.allow_admin,
            users=frozenset(self.allowed_users),
            groups=frozenset(self.allowed_groups),
        )

    def user_allowed(self, model: dict[str, Any]) -> bool:
        """Whether a hub-authenticated user (or service) may use this service at all."""
        return self.access_rule().allows(model)

    def service_links(self, model: dict[str, Any] | None) -> list[tuple[str, str, bool]]:
        """(title, URL, is this one) of each service of this hub that ``model`` may use."""
        if not model:
            return []
        parent = self.service_prefix.rstrip("/").rpartition("/")[0] + "/"
        others = (peer for peer in self.peers if peer.name != self.service_name)
        peers = [Peer(self.service_name, self.title, self.access_rule()), *others]
        return sorted(
            (peer.title, f"{parent}{peer.name}/", peer.name == self.service_name)
            for peer in peers
            if peer.name == self.service_name or peer.rule.allows(model)
        )

    async def on_start(self) -> None:
        """Make the service's objects and add its periodic jobs to ``self.scheduler``; the
        hub client, metrics and migrated database are ready. Jobs start after this returns."""

    async def on_stop(self) -> None:
        """Stop background work the scheduler does not own, within ``shutdown_grace`` seconds
        (then ``INTERRUPT_SECONDS`` more to record what it cut short, and it is cancelled).
        Scheduling has stopped already; the database and hub client close after this."""

    # -- running ----------------------------------------------------------------------------

    def template_dirs(self) -> list[Path]:
        """The service's templates first, then the common ones it extends."""
        own = Path(sys.modules[type(self).__module__].__file__ or "").parent / "templates"
        return [own, COMMON_DIR / "templates"]

    def load_cookie_secret(self) -> bytes:
        """Read the cookie secret, creating it 0600 on first start and tightening loose modes."""
        path = Path(self.cookie_secret_file)
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                self.log.warning("Cookie secret %s was mode %o; setting 0600", path, mode)
                path.chmod(0o600)
            return bytes.fromhex(path.read_text().strip())
        private_dir(path.parent)
        secret = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex())
        return secret

    def make_metrics(self) -> CollectorRegistry:
        """A registry per service, so one process never mixes two services' series."""
        self.registry = CollectorRegistry()
        prefix = f"hubservices_{self.service_name}"
        Info(f"{prefix}_build", "Service version", registry=self.registry).info(
            {"version": self.version}
        )
        self.request_duration = Histogram(
            f"{prefix}_http_request_duration_seconds",
            "Time to answer HTTP requests",
            ["method", "handler", "code"],
            registry=self.registry,
        )
        self.hub_up = Gauge(
            f"{prefix}_hub_up",
            "1 if the hub API answered the last health check",
            registry=self.registry,
        )
        # what this service costs the hub: admins see it beside the hub's own metrics
        self.hub_requests = Counter(
            f"{prefix}_hub_requests",
            "Requests sent to the hub's REST API (retries included), by route and status code",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.hub_request_duration = Histogram(
            f"{prefix}_hub_request_duration_seconds",
            "Time the hub took to answer a request to its REST API, by route",
            ["method", "route"],
            registry=self.registry,
        )
        return self.registry

    def observe_hub_request(self, method: str, route: str, code: str, seconds: float) -> None:
        """Count one request to the hub (the hub client calls this after each)."""
        self.hub_requests.labels(method, route, code).inc()
        self.hub_request_duration.labels(method, route).observe(seconds)

    async def hub_status(self) -> dict[str, Any]:
        """Whether the hub answers, asked at most every ``HUB_STATUS_SECONDS``; why not (it
        names the hub's internal URL) goes to the log.

        The health route needs no login, so it must not let anyone make us call the hub at will.
        """
        checked, previous = getattr(self, "_hub_status", (-HUB_STATUS_SECONDS, {}))
        if time.monotonic() - checked < HUB_STATUS_SECONDS:
            return previous
        try:
            info = await asyncio.wait_for(self.hub.hub_info(), HUB_CHECK_TIMEOUT)
        except Exception as e:  # any failure means "not reachable"; say which, in the log
            status = {"reachable": False, "version": None, "error": str(e) or type(e).__name__}
            if status != previous:  # once per change, not on every health check
                self.log.warning("Hub not reachable: %s", status["error"])
        else:
            status = {"reachable": True, "version": info.get("version")}
        self.hub_up.set(1 if status["reachable"] else 0)
        self._hub_status = (time.monotonic(), status)
        return status

    def make_hub_api(self, **options: Any) -> HubAPI:
        """The hub client, with internal TLS when the hub gives us certificates.

        ``options`` (concurrency, page_size...) go to :class:`HubAPI` as they are.
        """
        cert = (self.ssl_certfile, self.ssl_keyfile) if self.ssl_certfile else None
        return HubAPI(
            self.hub_api_url,
            self.api_token,
            timeout=self.hub_timeout,
            retries=self.hub_retries,
            verify=self.ssl_client_ca or True,
            cert=cert,
            observer=self.observe_hub_request,
            **options,
        )

    def make_web_app(self) -> TornadoApplication:
        """The tornado application with every route under the service prefix."""
        prefix = self.service_prefix
        hub_auth = HubOAuth(
            api_url=self.hub_api_url,
            api_token=self.api_token,
            base_url=prefix,
            cache_max_age=60,
            certfile=self.ssl_certfile,
            keyfile=self.ssl_keyfile,
            client_ca=self.ssl_client_ca,
            parent=self,
        )
        templates = Environment(
            loader=ChoiceLoader([FileSystemLoader(str(d)) for d in self.template_dirs()]),
            autoescape=select_autoescape(default=True),
        )
        routes = self.routes()
        return TornadoApplication(
            [(prefix + path, *rest) for path, *rest in routes],
            service=self,
            hub_auth=hub_auth,
            cookie_secret=self.load_cookie_secret(),
            templates=templates,
            static_path=str(COMMON_DIR / "static"),
            static_url_prefix=prefix + STATIC_PREFIX,
            compress_response=True,
            default_handler_class=NotFoundHandler,
            log_function=log_request,
            **self.web_settings(),
        )

    def routes(self) -> list[Route]:
        """Every route of the service's own, relative to its prefix (tornado adds
        :data:`STATIC_PREFIX`)."""
        return common_handlers() + self.service_handlers()

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        asyncio.run(self.serve())

    async def open(self) -> None:
        """Everything but the web server: hub client, metrics, the database migrated (in a
        thread, as all blocking database work), then the service's :meth:`on_start`.

        Benchmarks drive a service opened this way, so they run the service's own code.
        """
        private_dir(Path(self.data_dir))
        self.make_metrics()
        self.hub = self.make_hub_api()
        self.scheduler = Scheduler()
        if self.migrations:
            self.db = Database(
                self.db_url,
                migrations=self.migrations,
                version_table=f"alembic_version_{self.service_name}",
            )
            await asyncio.to_thread(self.db.upgrade)
        await self.on_start()

    async def close(self) -> None:
        """Stop scheduling, let :meth:`on_stop` finish (``shutdown_grace`` seconds, then
        ``INTERRUPT_SECONDS`` to record what it interrupted), close the rest."""
        self.scheduler.shutdown()
        limit = self.shutdown_grace + INTERRUPT_SECONDS
        try:
            await asyncio.wait_for(self.on_stop(), limit)
        except TimeoutError:
            self.log.warning("Background work did not stop in %ss; leaving it", limit)
        if self.migrations:
            self.db.dispose()
        await self.hub.aclose()

    async def serve(self) -> None:
        """Open, listen, run the jobs, and stop cleanly on SIGTERM or SIGINT."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await self.open()
        web_app = self.make_web_app()
        url = urlparse(self.bind_url)
        ssl_options = None
        if url.scheme == "https":
            ssl_options = {"certfile": self.ssl_certfile, "keyfile": self.ssl_keyfile}
        server = HTTPServer(web_app, xheaders=True, ssl_options=ssl_options)
        assert url.port, "bind_url's validator requires a port"
        server.listen(url.port, url.hostname or "")
        self.scheduler.start()
        self.log.info(
            "%s %s listening on %s, route %s",
            self.service_name,
            self.version,
            self.bind_url,
            self.service_prefix,
        )

        await stopping.wait()

        self.log.info("Stopping %s", self.service_name)
        server.stop()
        await self.close()

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        """Entry point of ``python -m hubservices.<name>``."""
        app = cls.instance()
        app.initialize(argv)
        app.start()
