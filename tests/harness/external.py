"""Our services run by hand, as a systemd unit runs them: external to the hub, so that a test
can start them before the hub, restart the hub under them or revoke their token."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from hubservices.common.hubconfig import required_scopes

from . import free_port


def registered(name: str, token: str) -> str:
    """``jupyterhub_config.py`` lines for ``name`` as an external service with ``token`` and
    the least-privilege role ``hubservices-config`` would give it."""
    return f"""
c.JupyterHub.services.append({{"name": {name!r}, "api_token": {token!r}}})
c.JupyterHub.load_roles.append({{"name": "hubservices-{name}", "services": [{name!r}],
    "scopes": {required_scopes(name)!r}}})
"""


class ExternalService:
    """``python -m hubservices.<name>`` with the hub's URL and its token in the environment;
    what it prints goes to ``<data>/<name>.log``."""

    def __init__(self, name: str, token: str, api_url: str, data: Path, *args: str) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.log_path = data / f"{name}.log"
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"hubservices.{name}", f"--data-dir={data}", *args],
                env={
                    **os.environ,
                    "JUPYTERHUB_API_TOKEN": token,
                    "JUPYTERHUB_API_URL": api_url,
                    "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{free_port()}",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text()

    async def wait_for(self, text: str, timeout: float = 60) -> None:
        """Until the service prints ``text``; a slow machine takes seconds to import it.
        Asynchronous, so that a fake hub on the test's event loop answers meanwhile."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.running, f"the service exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"{text!r} not printed:\n{self.output()}"
            await asyncio.sleep(0.2)

    def stop(self) -> str:
        """SIGTERM (SIGKILL if it takes over 20 s), then everything the service printed."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.output()
