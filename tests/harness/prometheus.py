"""A real Prometheus for tests: the Debian ``prometheus`` binary on a free port, scraping one
target with a bearer token read from a file, and its HTTP API to read the series back.

Fixtures: ``promtool(text)`` runs ``promtool check metrics``; ``prom = prometheus(url, token)``
starts a server scraping ``url`` every second; ``prom.wait_for(expr)`` polls ``/api/v1/query``
until ``expr`` has a sample. Every server started is killed at the end of the test, failed or
not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.harness import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def require(binary: str) -> None:
    """Skip without the binary, except under CI, where a missing package must fail."""
    if not Path(binary).exists():
        reason = f"{binary} is not installed (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition; its findings are in stdout/stderr."""
    require(PROMTOOL)
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


class Prometheus:
    """One Prometheus server scraping ``target`` (a full metrics URL) every second."""

    def __init__(self, workdir: Path, target: str, token: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        token_file = workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        parsed = urlparse(target)
        (workdir / "prometheus.yml").write_text(
            f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: hubservices-stats
    scheme: {parsed.scheme}
    metrics_path: {parsed.path}
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{parsed.netloc}"]
"""
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        require(PROMETHEUS)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        r.raise_for_status()
        return r.json()["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: [{"metric": {labels}, "value": [time, "value"]}, ...]."""
        return self.api("query", query=expr)["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The query's result once it is not empty; an error with the target's state if never."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no samples of {expr} after {timeout}s; targets: {self.targets()}")


@pytest.fixture
def promtool() -> Callable[[str], subprocess.CompletedProcess[str]]:
    """``promtool(text)``: ``promtool check metrics`` on an exposition (see check_metrics)."""
    return check_metrics


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str, str], Prometheus]]:
    """``prometheus(metrics_url, token)``: a started Prometheus scraping that URL."""
    started: list[Prometheus] = []

    def start(target: str, token: str) -> Prometheus:
        workdir = tmp_path / f"prometheus{len(started)}"
        workdir.mkdir()
        prom = Prometheus(workdir, target, token)
        started.append(prom)
        prom.start()
        return prom

    yield start
    for prom in started:
        prom.stop()
