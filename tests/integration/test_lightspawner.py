"""LightSpawner on a real hub: hundreds of servers without a process each, for scale tests."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from hubservices.common.hubapi import HubAPI, HubAPIError
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

USERS = 300
IDLE = "light-idle"

CONFIG = """
c.JupyterHub.spawner_class = "tests.harness.lightspawner.LightSpawner"
c.LightSpawner.stop_delay = 0.5
c.JupyterHub.tornado_settings = {"slow_stop_timeout": 0.1}
c.JupyterHub.cleanup_servers = False
"""


def iso(when: datetime) -> str:
    """The hub's timestamp format: ISO 8601 in UTC with a Z."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def last_activity(api: HubAPI, name: str) -> datetime:
    """The default server's last_activity as the hub reports it."""
    user = await api.get_user(name)
    return datetime.fromisoformat(user["servers"][""]["last_activity"])


async def ready_names(api: HubAPI) -> set[str]:
    """Users whose server is ready, read over several pages."""
    return {user["name"] for user in await api.list_users(state="ready")}


def assert_reachable(hub: Hub, names: list[str]) -> None:
    """The proxy routes /user/<name>/ to the shared responder."""
    for name in names:
        r = httpx.get(f"{hub.url}/user/{name}/tree", timeout=10)
        assert (r.status_code, r.text) == (200, "lightspawner\n")


async def test_hundreds_of_light_servers(tmp_path: Path) -> None:
    hub = Hub(tmp_path, services=[], extra_config=CONFIG)
    hub.start()
    try:
        # Below the hub's concurrent_spawn_limit of 100, which answers 429 "retry in 30-60 s".
        async with HubAPI(hub.api_url, hub.admin_token, concurrency=50, page_size=200) as api:
            names = [f"light-{i:04d}" for i in range(USERS - 1)] + [IDLE]
            await api.create_users(names)

            tic = time.perf_counter()
            statuses = await asyncio.gather(*(api.start_server(n) for n in names[:-1]))
            await api.post("users", IDLE, "server", json={"idle_seconds": 86400})
            print(f"\nstarted {USERS} light servers in {time.perf_counter() - tic:.1f}s")
            assert set(statuses) <= {201, 202}

            assert await ready_names(api) >= set(names)
            assert_reachable(hub, names[:2])
            # No process per server: the hub's only child is the proxy.
            assert hub.proc is not None
            assert len(psutil.Process(hub.proc.pid).children(recursive=True)) == 1

            # Stopping takes 0.5 s, longer than slow_stop_timeout: 202, then it is gone.
            stopped = names[0]
            assert await api.stop_server(stopped) == 202
            for _ in range(50):
                if not (await api.get_user(stopped))["servers"]:
                    break
                await asyncio.sleep(0.1)
            assert (await api.get_user(stopped))["servers"] == {}
            with pytest.raises(HubAPIError) as bad_option:
                await api.post("users", stopped, "server", json={"idle_seconds": "long"})
            assert bad_option.value.status == 400

            # idle_seconds made the server idle for a day; the activity API moves it forward only.
            now = datetime.now(UTC)
            day_old = await last_activity(api, IDLE)
            assert now - day_old > timedelta(hours=23)
            for hours, expected in ((48, day_old), (12, now - timedelta(hours=12))):
                body = {"servers": {"": {"last_activity": iso(now - timedelta(hours=hours))}}}
                await api.post("users", IDLE, "activity", json=body)
                assert await last_activity(api, IDLE) == expected

            await asyncio.to_thread(hub.restart)
            ready = await ready_names(api)
            assert ready >= set(names[1:]) and stopped not in ready
            assert await last_activity(api, IDLE) == now - timedelta(hours=12)
            assert_reachable(hub, [names[1], IDLE])
    finally:
        hub.stop()
