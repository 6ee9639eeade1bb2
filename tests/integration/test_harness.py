"""The harness itself: a restart logs nobody out; stopping leaves no process behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubservices.common.hubapi import HubAPI
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub


async def test_restart_keeps_logins_and_stop_leaves_nothing(tmp_path: Path) -> None:
    hub = Hub(tmp_path, services=["cull"])
    hub.start()
    try:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            await api.start_server("admin")
        client = hub.browser("admin")
        assert client.get(hub.service_url("cull")).status_code == 200
        secret = (tmp_path / "data" / "cull_cookie_secret").stat()
        assert secret.st_mode & 0o777 == 0o600

        hub.restart()
        # same cookie secret: the service still knows the browser without a new OAuth trip
        r = client.get(hub.service_url("cull"), follow_redirects=False)
        assert r.status_code == 200
        client.close()
        started = set(hub._seen)
        assert len(started) >= 3  # proxy, cull service, admin's server
    finally:
        hub.stop()
    assert hub.leftover_processes() == []
    assert not any(p.is_running() and p.status() != "zombie" for p in started)
