"""Fixtures shared by the whole suite: a real hub, its admin API, logged-in browsers, tokens."""

from __future__ import annotations

import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from hubservices.common.hubapi import HubAPI
from tests.harness.hub import Hub

pytest_plugins = ["tests.harness.postgres", "tests.harness.prometheus", "tests.harness.chromium"]


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One real hub with all three services, shared by the tests that only read and log in."""
    with Hub(tmp_path_factory.mktemp("hub"), prometheus_token=secrets.token_hex(32)) as hub:
        yield hub


@pytest.fixture
async def hub_api(hub: Hub) -> AsyncIterator[HubAPI]:
    """Our own hub client, with the harness's admin token."""
    async with HubAPI(hub.api_url, hub.admin_token) as api:
        yield api


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names no other test uses, so tests sharing a hub never see each other's users."""
    suffix = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{suffix}"


@pytest.fixture
def browser(hub: Hub) -> Iterator[Callable[[str], httpx.Client]]:
    """``browser("admin")``: an HTTP client logged in to the hub through its login form."""
    clients: list[httpx.Client] = []

    def login(username: str) -> httpx.Client:
        client = hub.browser(username)
        clients.append(client)
        return client

    yield login
    for client in clients:
        client.close()


@pytest.fixture
def venv_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """nbgrader runs ``alembic`` from PATH, as the service's worker finds it."""
    bindir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
