"""hubservices.common.hubapi against a fake hub that injects the faults a real hub rarely shows."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import warnings
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import certifi
import pytest

from hubservices.common.hubapi import (
    PAGINATION_MEDIA_TYPE,
    HubAPI,
    HubAPIError,
    HubUnavailable,
    MissingScopeError,
    api_path,
)
from tests.harness import free_port
from tests.unit.fakehub import VERSION, FakeHub, Reply, error

TOKEN = "s3cr3t-service-token-0123456789"
WEIRD_NAMES = ["dana#1", "a/b", "50%", "x y", "ünï", "q?x"]
# jupyterhub.scopes.needs_scope's message, verbatim
SCOPE_MESSAGE = "Action is not authorized with current scopes; requires any of [list:users]"


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    # "dana", "a" and "q" are what "dana#1", "a/b" and "q?x" would reach if sent unquoted
    fake = FakeHub(users=["alice", "dana", "a", "q", *WEIRD_NAMES])
    await fake.start()
    yield fake
    await fake.stop()


def make_client(url: str, **kwargs: Any) -> HubAPI:
    """A client that backs off for milliseconds, not seconds."""
    options: dict[str, Any] = {"retries": 3, "backoff_base": 0.01, "backoff_max": 5}
    return HubAPI(url, TOKEN, **(options | kwargs))


@pytest.fixture
async def client(hub: FakeHub) -> AsyncIterator[HubAPI]:
    async with make_client(hub.url) as api:
        yield api


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hubservices.common.hubapi" and r.levelno == logging.WARNING
    ]


# --- paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segments", "path"),
    [
        (("users", "dana#1"), "/users/dana%231"),
        (("users", "a/b"), "/users/a%2Fb"),
        (("users", "50%"), "/users/50%25"),
        (("users", "x y"), "/users/x%20y"),
        (("users", "ünï"), "/users/%C3%BCn%C3%AF"),
        (("users", "q?x"), "/users/q%3Fx"),
        (("users", ".."), "/users/%2E%2E"),
        (("users", "."), "/users/%2E"),
        (("users", "bob", "servers", "a/b"), "/users/bob/servers/a%2Fb"),
        ((), "/"),
    ],
)
def test_api_path_quotes_every_segment(segments: tuple[str, ...], path: str) -> None:
    assert api_path(*segments) == path


@pytest.mark.parametrize("segments", [("users", ""), ("users", "", "server"), ("",)])
def test_api_path_refuses_empty_segments(segments: tuple[str, ...]) -> None:
    # "users/" + "" would be the user list, not a user
    with pytest.raises(ValueError, match="empty segment"):
        api_path(*segments)


async def test_get_user_sends_the_name_quoted(hub: FakeHub, client: HubAPI) -> None:
    user = await client.get_user("dana#1")

    assert user["name"] == "dana#1"
    assert [r.path for r in hub.received] == ["/hub/api/users/dana%231"]


@pytest.mark.parametrize("name", WEIRD_NAMES)
async def test_get_user_never_reaches_another_user(hub: FakeHub, client: HubAPI, name: str) -> None:
    assert (await client.get_user(name))["name"] == name
    assert hub.received[-1].path == "/hub/api" + api_path("users", name)


async def test_dot_names_are_not_collapsed_into_a_parent_path(hub: FakeHub, client: HubAPI) -> None:
    with pytest.raises(HubAPIError) as raised:
        await client.get_user("..")

    assert raised.value.status == 404  # no user "..", rather than the API root's answer
    assert hub.received[-1].path == "/hub/api/users/%2E%2E"


# --- pagination --------------------------------------------------------------------------


USERS_PAGE = "/hub/api/users"


@pytest.mark.parametrize(
    ("page_size", "uris"),
    [
        (
            None,
            [
                USERS_PAGE,
                f"{USERS_PAGE}?offset=200&limit=200",
                f"{USERS_PAGE}?offset=400&limit=200",
            ],
        ),
        (
            100,
            [f"{USERS_PAGE}?limit=100"]
            + [f"{USERS_PAGE}?limit=100&offset={offset}" for offset in (100, 200, 300, 400)],
        ),
    ],
)
async def test_list_users_follows_every_page(
    hub: FakeHub, page_size: int | None, uris: list[str]
) -> None:
    hub.users = [{"kind": "user", "name": f"user{i:03}", "servers": {}} for i in range(450)]

    async with make_client(hub.url, page_size=page_size) as client:
        users = await client.list_users()

    assert [u["name"] for u in users] == [f"user{i:03}" for i in range(450)]
    assert [r.uri for r in hub.received] == uris
    assert all(r.headers["Accept"] == PAGINATION_MEDIA_TYPE for r in hub.received)


def query_of(uri: str) -> dict[str, str]:
    query = uri.partition("?")[2]
    return dict(pair.split("=") for pair in query.split("&")) if query else {}


async def test_list_users_passes_filters_on_every_page(hub: FakeHub, client: HubAPI) -> None:
    hub.users = [{"kind": "user", "name": f"user{i}", "servers": {}} for i in range(250)]

    assert len(await client.list_users(state="ready", include_stopped_servers=True)) == 250

    pages = hub.requests_to("/users")
    assert len(pages) == 2
    for page in pages:
        assert query_of(page.uri)["state"] == "ready"
        assert query_of(page.uri)["include_stopped_servers"] == "true"


async def test_paginate_accepts_a_plain_list_from_an_old_hub(hub: FakeHub, client: HubAPI) -> None:
    old_style = [{"name": "alice"}, {"name": "bob"}]
    hub.script("GET", "/users", Reply(body=old_style))

    assert await client.list_users() == old_style
    assert len(hub.requests_to("/users")) == 1


# --- retries -----------------------------------------------------------------------------


async def test_503_twice_then_success(
    hub: FakeHub, client: HubAPI, caplog: pytest.LogCaptureFixture
) -> None:
    hub.script("GET", "/users/alice", *[error(503, "Service Unavailable")] * 2)

    assert (await client.get_user("alice"))["name"] == "alice"

    assert len(hub.requests_to("/users/alice")) == 3
    messages = retry_warnings(caplog)
    assert len(messages) == 2
    assert messages[0].startswith("hub API GET /users/alice: 503, retry 1/3 in ")
    assert messages[1].startswith("hub API GET /users/alice: 503, retry 2/3 in ")


async def test_every_request_is_reported_by_route_without_names(hub: FakeHub) -> None:
    """What a service's metrics count: each attempt, its status, names never in the label."""
    seen: list[tuple[str, str, str]] = []

    def observe(method: str, route: str, code: str, seconds: float) -> None:
        assert seconds >= 0
        seen.append((method, route, code))

    hub.script("GET", "/users/a%2Fb", error(503, "Service Unavailable"))
    async with make_client(hub.url, observer=observe) as client:
        await client.get_user("a/b")
        with pytest.raises(HubAPIError):
            await client.get_user("nobody")
        await client.hub_info()
    assert seen == [
        ("GET", "/users/{name}", "503"),
        ("GET", "/users/{name}", "200"),
        ("GET", "/users/{name}", "404"),
        ("GET", "/", "200"),
    ]


async def test_429_waits_for_retry_after(hub: FakeHub, client: HubAPI) -> None:
    hub.script("GET", "/users/alice", error(429, "Too many requests", **{"Retry-After": "1"}))

    started = time.monotonic()
    await client.get_user("alice")

    assert 0.9 <= time.monotonic() - started < 2


async def test_retry_after_as_http_date(hub: FakeHub, client: HubAPI) -> None:
    when = formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    hub.script("GET", "/users/alice", error(503, "Hub restarting", **{"Retry-After": when}))

    started = time.monotonic()
    await client.get_user("alice")

    assert 0.9 <= time.monotonic() - started < 2.5


async def test_retry_after_is_capped_by_backoff_max(hub: FakeHub) -> None:
    hub.script("GET", "/users/alice", error(429, "slow down", **{"Retry-After": "3600"}))

    async with make_client(hub.url, backoff_max=0.1) as client:
        started = time.monotonic()
        await client.get_user("alice")

    assert time.monotonic() - started < 1


async def test_backoff_does_not_hold_a_concurrency_slot(hub: FakeHub) -> None:
    hub.script("GET", "/users/alice", error(429, "slow down", **{"Retry-After": "1"}))

    async with make_client(hub.url, concurrency=1, backoff_max=30) as client:
        backing_off = asyncio.create_task(client.get_user("alice"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.wait_for(client.get_user("dana"), 0.5)
        assert time.monotonic() - started < 0.5
        await backing_off


async def test_connection_refused_gives_up_clearly(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/hub/api"

    async with make_client(url) as client:
        with pytest.raises(HubUnavailable) as raised:
            await client.list_users()

    assert raised.value.status is None
    assert str(raised.value) == (
        f"hub API GET /users: no answer from the hub at {url} "
        "(ConnectError: All connection attempts failed); gave up after 4 attempts"
    )
    assert [m.split(" in ")[0] for m in retry_warnings(caplog)] == [
        f"hub API GET /users: ConnectError: All connection attempts failed, retry {n}/3"
        for n in (1, 2, 3)
    ]


async def test_hub_restart_during_retries_is_survived(hub: FakeHub) -> None:
    async def restart_later() -> None:
        await asyncio.sleep(0.3)
        await hub.start()

    async with make_client(hub.url, retries=10, backoff_base=0.05, backoff_max=0.1) as client:
        await client.hub_info()  # leaves a pooled connection for the stop to break
        await hub.stop()
        restart = asyncio.create_task(restart_later())
        started = time.monotonic()
        info = await client.hub_info()
        await restart

    assert info == {"version": VERSION}
    assert time.monotonic() - started >= 0.3


async def test_5xx_until_the_end_raises_hub_unavailable(hub: FakeHub, client: HubAPI) -> None:
    hub.script("GET", "/users", *[error(503, "Service Unavailable")] * 4)

    with pytest.raises(HubUnavailable) as raised:
        await client.list_users()

    assert raised.value.status == 503
    assert str(raised.value) == (
        "hub API GET /users: 503, Service Unavailable; gave up after 4 attempts"
    )


async def test_read_timeout_is_retried(hub: FakeHub, caplog: pytest.LogCaptureFixture) -> None:
    hub.script("GET", "/users/alice", Reply(200, {"name": "slow"}, delay=1))

    async with make_client(hub.url, timeout=0.2) as client:
        assert (await client.get_user("alice"))["name"] == "alice"

    assert len(hub.requests_to("/users/alice")) == 2
    assert retry_warnings(caplog)[0].startswith("hub API GET /users/alice: ReadTimeout")


async def test_post_is_not_resent_when_the_hub_may_have_acted(hub: FakeHub) -> None:
    # A resent POST /users/<name>/tokens would issue a second token.
    hub.script("POST", "/users/alice/tokens", Reply(201, {"token": "t"}, delay=1))

    async with make_client(hub.url, timeout=0.2) as client:
        with pytest.raises(HubUnavailable) as raised:
            await client.create_token("alice")

    assert len(hub.requests_to("/users/alice/tokens")) == 1
    assert "not resent, the hub may have acted on this POST already" in str(raised.value)


async def test_post_is_resent_when_the_hub_refused_it(hub: FakeHub, client: HubAPI) -> None:
    hub.script(
        "POST",
        "/users/alice/tokens",
        error(503, "Service Unavailable"),
        error(429, "Too many requests"),
        Reply(201, {"token": "new-token"}),
    )

    assert await client.create_token("alice", scopes=["read:users"]) == "new-token"
    assert len(hub.requests_to("/users/alice/tokens")) == 3


# --- errors ------------------------------------------------------------------------------


async def test_403_names_the_missing_scope(hub: FakeHub, client: HubAPI) -> None:
    hub.script("GET", "/users", error(403, SCOPE_MESSAGE))

    with pytest.raises(MissingScopeError) as raised:
        await client.list_users()

    assert raised.value.scopes == ["list:users"]
    assert raised.value.status == 403
    assert raised.value.message == SCOPE_MESSAGE
    assert (
        str(raised.value) == "hub API GET /users: 403, the service's token lacks scope list:users"
    )
    assert len(hub.requests_to("/users")) == 1  # not retried


async def test_403_with_several_acceptable_scopes(hub: FakeHub, client: HubAPI) -> None:
    message = (
        "Action is not authorized with current scopes; requires any of"
        " [read:users, read:users:name, read:servers]"
    )
    hub.script("GET", "/users/alice", error(403, message))

    with pytest.raises(MissingScopeError) as raised:
        await client.get_user("alice")

    assert raised.value.scopes == ["read:users", "read:users:name", "read:servers"]
    assert str(raised.value).endswith("lacks scope read:users or read:users:name or read:servers")


async def test_403_for_a_bad_token_says_so(hub: FakeHub, client: HubAPI) -> None:
    hub.script("GET", "/users", error(403, "Missing or invalid credentials."))

    with pytest.raises(MissingScopeError) as raised:
        await client.list_users()

    assert raised.value.scopes == []
    assert str(raised.value) == (
        "hub API GET /users: 403, Missing or invalid credentials. The service's token was "
        "refused: revoked, expired or never issued by this hub."
    )


async def test_404_is_an_error_with_status(client: HubAPI) -> None:
    with pytest.raises(HubAPIError) as raised:
        await client.get_user("nobody")

    assert type(raised.value) is HubAPIError
    assert raised.value.status == 404
    assert str(raised.value) == "hub API GET /users/nobody: 404, Not Found"


async def test_400_surfaces_the_hubs_message(hub: FakeHub, client: HubAPI) -> None:
    hub.script("POST", "/users", error(400, "Invalid username: a/b"))

    with pytest.raises(HubAPIError) as raised:
        await client.create_users(["a/b"])

    assert raised.value.status == 400
    assert raised.value.message == "Invalid username: a/b"
    assert str(raised.value) == "hub API POST /users: 400, Invalid username: a/b"


async def test_error_without_json_body_uses_the_reason(hub: FakeHub, client: HubAPI) -> None:
    hub.script("GET", "/users/alice", Reply(409, b"<html>conflict</html>"))

    with pytest.raises(HubAPIError, match=r"^hub API GET /users/alice: 409, Conflict$"):
        await client.get_user("alice")


# --- concurrency, version, configuration -------------------------------------------------


async def test_concurrency_is_bounded(hub: FakeHub) -> None:
    hub.script("GET", "/users/alice", *[Reply(200, {"name": "alice"}, delay=0.05)] * 20)

    async with make_client(hub.url, concurrency=3) as client:
        users = await asyncio.gather(*[client.get_user("alice") for _ in range(20)])

    assert len(users) == 20
    assert hub.max_in_flight == 3


async def test_hub_version_follows_responses(hub: FakeHub, client: HubAPI) -> None:
    before = client.hub_version
    assert before is None

    await client.hub_info()
    assert client.hub_version == VERSION

    hub.script("GET", "/", Reply(200, {"version": "7.0.0"}, {"X-JupyterHub-Version": "7.0.0"}))
    await client.hub_info()
    assert client.hub_version == "7.0.0"


async def test_url_and_token_default_to_the_hub_environment(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_URL", hub.url + "/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", TOKEN + "\n")  # as read from a file

    async with HubAPI() as client:
        assert await client.hub_info() == {"version": VERSION}

    assert hub.received[-1].path == "/hub/api/"
    assert hub.received[-1].headers["Authorization"] == f"token {TOKEN}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"token": TOKEN}, r"\$JUPYTERHUB_API_URL"),
        ({"url": "http://127.0.0.1:8081/hub/api"}, r"\$JUPYTERHUB_API_TOKEN"),
        ({"url": "127.0.0.1:8081/hub/api", "token": TOKEN}, "must start with http://"),
        ({"url": "http://h/hub/api", "token": "ab\ncd"}, "control characters"),
        ({"url": "http://h/hub/api", "token": TOKEN, "concurrency": 0}, "concurrency"),
    ],
)
def test_bad_configuration_is_refused(
    kwargs: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)

    with pytest.raises(ValueError, match=message) as raised:
        HubAPI(**kwargs)
    assert "ab\ncd" not in str(raised.value)


def test_ca_file_needs_no_deprecated_httpx_argument() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HubAPI("https://hub:8081/hub/api", TOKEN, verify=certifi.where())


# --- the token stays secret --------------------------------------------------------------


async def test_token_never_in_logs_or_errors(
    hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    hub.script("GET", "/users", error(503, "down"), error(403, SCOPE_MESSAGE))
    hub.script("POST", "/users/alice/tokens", Reply(201, {"token": "t"}, delay=1))
    errors: list[BaseException] = []

    async with make_client(hub.url, timeout=0.2) as client:
        for call in (client.list_users(), client.create_token("alice"), client.get_user("x")):
            with pytest.raises(HubAPIError) as raised:
                await call
            errors.append(raised.value)
    async with make_client(f"http://127.0.0.1:{free_port()}/hub/api") as client:
        with pytest.raises(HubUnavailable) as raised:
            await client.hub_info()
        errors.append(raised.value)

    assert {r.headers["Authorization"] for r in hub.received} == {f"token {TOKEN}"}
    assert len(caplog.records) > 10
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
    for exc in errors:
        assert TOKEN not in "".join(traceback.format_exception(exc))
        assert TOKEN not in repr(exc)
