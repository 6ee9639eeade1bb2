"""A real JupyterHub for tests: a subprocess with configurable-http-proxy, on free ports.

The hub's config is written the way a user's is: our services come from the generator's
snippet (:func:`hubservices.common.hubconfig.hub_config_snippet`) and are launched by the hub as
managed services. Stopping kills every process the hub started, also when a test failed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import psutil

from hubservices.common.hubconfig import hub_config_snippet
from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
PROXY_COMMAND = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
PASSWORD = "demo"

#: What the harness's own token may do: manage users, groups, servers and tokens.
HARNESS_SCOPES = [
    "admin:users",
    "admin:groups",
    "admin:servers",
    "tokens",
    "access:servers",
    "access:services",
    "read:services",
    "list:services",
    "read:roles",
]


class HubStartError(RuntimeError):
    """The hub or a service did not come up; the message holds the end of the hub's log."""


class Hub:
    """One JupyterHub subprocess in ``workdir`` with our chosen services.

    ``service_args`` passes command-line options to a service (``{"cull": ["--timeout=60"]}``),
    ``extra_config`` is appended to ``jupyterhub_config.py`` (spawner choice, more users...),
    ``prometheus_token`` adds the snippet's ``prometheus`` service with that token,
    ``db_url`` is the hub's own database (default: SQLite in ``workdir``; a PostgreSQL URL from
    :func:`tests.harness.postgres.fresh_database` for a hub of the size that uses one).
    """

    def __init__(
        self,
        workdir: Path,
        services: Sequence[str] = ("cull", "stats", "formgrader"),
        *,
        service_args: Mapping[str, Sequence[str]] | None = None,
        extra_config: str = "",
        recipe: str | None = None,
        prometheus_token: str | None = None,
        db_url: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.services = list(services)
        self.service_args = dict(service_args or {})
        self.extra_config = extra_config
        self.recipe = recipe
        self.prometheus_token = prometheus_token
        self.db_url = db_url or f"sqlite:///{self.workdir / 'jupyterhub.sqlite'}"
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.service_ports = {name: free_port() for name in self.services}
        self.admin_token = secrets.token_hex(32)
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"http://127.0.0.1:{self.hub_port}/hub/api"
        self.log_path = self.workdir / "jupyterhub.log"
        self.config_path = self.workdir / "jupyterhub_config.py"
        self.proc: subprocess.Popen | None = None
        #: every process the hub started, as psutil.Process objects: they refuse to signal a
        #: process that has since exited and whose pid was given to another (pid_max can be
        #: 32768, and a long test run wraps around it)
        self._seen: set[psutil.Process] = set()  # a Process is its pid and start time

    # -- lifecycle --------------------------------------------------------------------------

    def config_text(self) -> str:
        """``jupyterhub_config.py`` as a user would write it, plus the harness's admin token."""
        work = self.workdir
        spawner_args = ["--allow-root"] if os.geteuid() == 0 else []
        snippet = hub_config_snippet(
            self.services,
            ports=self.service_ports,
            args=self.service_args,
            data_dir=str(work / "data"),
            prometheus=self.prometheus_token is not None,
        )
        essentials = f"""\
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{self.hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{str(PROXY_COMMAND)!r}]
c.ConfigurableHTTPProxy.pid_file = {str(work / "proxy.pid")!r}
c.JupyterHub.db_url = {self.db_url!r}
c.JupyterHub.cookie_secret_file = {str(work / "jupyterhub_cookie_secret")!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(work / "home" / "{username}")!r}
c.Spawner.args = {spawner_args!r}
c.Spawner.start_timeout = 60
"""
        harness = f"""\
c.JupyterHub.services.append({{"name": "harness", "api_token": {self.admin_token!r}}})
c.JupyterHub.load_roles.append(
    {{"name": "harness", "scopes": {HARNESS_SCOPES!r}, "services": ["harness"]}}
)
"""
        # the services as a plain list (a config that only extended it holds a LazyConfigValue)
        services_as_list = """\
_services = c.JupyterHub.services
if not isinstance(_services, list):  # only extended so far: a traitlets LazyConfigValue
    c.JupyterHub.services = _services = _services.get_value([])
"""
        if self.recipe is None:
            parts = [essentials, snippet, services_as_list]
        else:
            # a deploy recipe as written, then this machine's ports and paths swapped in
            parts = [
                self.recipe,
                essentials,
                services_as_list,
                f"""\
for _service in _services:
    if _service["name"] in {self.service_ports!r}:
        _port = {self.service_ports!r}[_service["name"]]
        _service["url"] = f"http://127.0.0.1:{{_port}}"
        _service["command"] = [{sys.executable!r}] + [
            a for a in _service["command"][1:] if not a.startswith(("--bind-url=", "--data-dir="))
        ] + ["--data-dir={work / "data"}"]
""",
            ]
        # a loaded 2-core CI machine can take longer than the hub's default 30 s to start a service
        slow_start = """\
for _service in _services:
    _service.setdefault("timeout", 120)
"""
        return "\n".join(
            ["c = get_config()  # noqa", *parts, slow_start, harness, self.extra_config, ""]
        )

    def __enter__(self) -> Hub:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 150) -> None:
        """Start the hub and wait until it and every service answer through the proxy."""
        self.config_path.write_text(self.config_text())
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # the hub imports test-only code (tests.harness.lightspawner) from the project
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if self.prometheus_token is not None:  # the snippet's prometheus service reads it
            env["PROMETHEUS_API_TOKEN"] = self.prometheus_token
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_until_up(timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        """The hub's process id (its services are its children)."""
        assert self.proc is not None, "start() launches the hub first"
        return self.proc.pid

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = [f"{self.url}/hub/api/"] + [
            f"{self.url}/services/{name}/health" for name in self.services
        ]
        assert self.proc is not None, "start() launches the hub first"
        with httpx.Client(timeout=2) as client:
            while pending:
                self._remember_children()
                if self.proc.poll() is not None:
                    raise HubStartError(
                        f"the hub exited ({self.proc.returncode}):\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise HubStartError(f"not up after {timeout}s: {pending[0]}\n{self.log_tail()}")
                try:
                    if client.get(pending[0]).status_code == 200:
                        pending.pop(0)
                        continue
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self._remember_children()

    def _remember_children(self) -> None:
        """Note every process the hub started, so that stop() can be sure they are gone."""
        if self.proc is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            self._seen.update(psutil.Process(self.proc.pid).children(True))

    def stop(self, timeout: float = 20) -> None:
        """Stop the hub (it stops its proxy, services and servers), then kill any leftover."""
        if self.proc is None:
            return
        self._remember_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for process in self._seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.proc = None

    def restart(self, timeout: float = 150) -> None:
        """Stop and start the same hub: same database, ports and tokens."""
        self.stop()
        self.start(timeout)

    def leftover_processes(self) -> list[psutil.Process]:
        """Processes this hub started that are still alive (should be none after stop)."""
        alive = []
        for process in self._seen:
            with contextlib.suppress(psutil.NoSuchProcess):  # also: its pid is another's now
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        return alive

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def service_url(self, name: str, path: str = "") -> str:
        return f"{self.url}/services/{name}/{path}"

    # -- browsers ---------------------------------------------------------------------------

    def browser(self, username: str, password: str = PASSWORD) -> httpx.Client:
        """An HTTP client logged in to the hub through its login form, like a browser."""
        client = httpx.Client(base_url=self.url, follow_redirects=True, timeout=30)
        login_page = client.get("/hub/login")
        match = re.search(r'name="_xsrf" value="([^"]+)"', login_page.text)
        form = {"username": username, "password": password}
        if match:
            form["_xsrf"] = match.group(1)
        r = client.post("/hub/login", data=form)
        if "/hub/login" in str(r.url):
            client.close()
            raise AssertionError(f"login of {username!r} failed: {r.status_code}")
        return client
