"""The cull service against a real hub: what it stops, what it spares, and how it says why."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from hubservices.common.hubapi import HubAPI
from tests.harness.external import ExternalService, registered
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

LIGHT = """
c.JupyterHub.spawner_class = "tests.harness.lightspawner.LightSpawner"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.load_groups = {"staff": {"users": []}, "long-jobs": {"users": []}}
"""

POLICIES = [
    {"name": "staff", "groups": ["staff"], "never": True},
    {"name": "long-jobs", "groups": ["long-jobs"], "timeout": 8 * 3600},
    {"name": "gpu", "user_options": {"profile": "gpu"}, "timeout": 1800},
]


class CullClient:
    """The culler's JSON API, as an admin's script would use it."""

    def __init__(self, hub: Hub, token: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=hub.service_url("cull"),
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )

    async def cycle(self, timeout: float = 60) -> dict:
        """Run a cycle now and return it once finished."""
        before = (await self.http.get("api/cycles", params={"limit": 1})).json()
        last_id = before[0]["id"] if before else 0
        assert (await self.http.post("api/cycles")).status_code == 202
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cycles = (await self.http.get("api/cycles", params={"limit": 1})).json()
            if cycles and cycles[0]["id"] > last_id and cycles[0]["finished_at"]:
                return cycles[0]
            await asyncio.sleep(0.2)
        raise AssertionError("no cycle finished")

    async def culls(self, **params) -> list[dict]:
        return (await self.http.get("api/culls", params=params)).json()


async def wait_first_cycle(client: CullClient) -> None:
    for _ in range(150):
        cycles = (await client.http.get("api/cycles")).json()
        if cycles and cycles[-1]["finished_at"]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the first cycle never finished")


async def start(api: HubAPI, user: str, server: str = "", **options) -> None:
    path = ("users", user, "servers", server) if server else ("users", user, "server")
    await api.post(*path, json=options)


async def servers_of(api: HubAPI, user: str) -> dict:
    return (await api.get_user(user)).get("servers") or {}


@pytest.fixture
async def cull_hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, HubAPI, CullClient]]:
    """A hub whose culler uses a 1 h timeout, policies, and removes named servers."""
    config = tmp_path / "cull_config.py"
    warned = tmp_path / "warned.txt"
    record = "import os, sys; print(os.environ['CULL_USER'], os.environ['CULL_DUE'], "
    record += "'JUPYTERHUB_API_TOKEN' in os.environ, file=open(sys.argv[1], 'a'))"
    config.write_text(
        f"c.Culler.policies = {POLICIES!r}\n"
        f"c.Culler.warn_before = 1800\n"
        f"c.Culler.warn_command = {[sys.executable, '-c', record, str(warned)]!r}\n"
    )
    hub = Hub(
        tmp_path / "hub",
        services=["cull"],
        service_args={
            "cull": [
                f"--config={config}",
                "--timeout=3600",
                "--cull-every=3600",
                "--remove-named-servers",
            ]
        },
        extra_config=LIGHT,
    )
    with hub:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            token = await api.create_token("admin", scopes=["access:services!service=cull"])
            client = CullClient(hub, token)
            await wait_first_cycle(client)
            yield hub, api, client
            await client.http.aclose()


async def test_one_cycle_stops_what_is_due_and_spares_the_rest(cull_hub) -> None:
    hub, api, cull = cull_hub
    users = [
        "idle",
        "active",
        "pending",
        "named",
        "gpu",
        "cpu",
        "staffer",
        "marathon",
        "dana",
        "dana#1",
    ]
    await api.create_users(users)
    await api.add_group_users("staff", ["staffer"])
    await api.add_group_users("long-jobs", ["marathon"])
    await asyncio.gather(
        start(api, "idle", idle_seconds=4000),
        start(api, "active"),
        start(api, "named", "big-data", idle_seconds=4000),
        start(api, "named"),
        start(api, "gpu", idle_seconds=2000, profile="gpu"),
        start(api, "cpu", idle_seconds=2000, profile="cpu"),
        start(api, "staffer", idle_seconds=99999),
        start(api, "marathon", idle_seconds=4000),
        start(api, "dana"),
        start(api, "dana#1", idle_seconds=4000),
    )
    await start(api, "pending", start_delay=60, idle_seconds=4000)

    cycle = await cull.cycle()
    assert cycle["errors"] == 0
    assert cycle["culled_servers"] == 4

    assert await servers_of(api, "idle") == {}
    assert await servers_of(api, "gpu") == {}
    assert await servers_of(api, "dana#1") == {}
    named = await servers_of(api, "named")
    assert list(named) == [""]  # "big-data" stopped and removed, the active default kept
    named_all = await api.get("users", "named", params={"include_stopped_servers": "1"})
    assert "big-data" not in named_all["servers"]
    for kept in ["active", "cpu", "staffer", "marathon", "dana"]:
        assert list(await servers_of(api, kept)) == [""], kept
    assert (await servers_of(api, "pending"))[""]["pending"] == "spawn"

    culls = {(c["user"], c["server"]): c for c in await cull.culls()}
    assert set(culls) == {("idle", ""), ("gpu", ""), ("dana#1", ""), ("named", "big-data")}
    assert culls[("gpu", "")]["rule"] == "gpu"
    assert culls[("gpu", "")]["why"].startswith("idle 33m")
    assert culls[("named", "big-data")]["outcome"] == "removed"
    assert culls[("idle", "")]["reason"] == "idle"
    assert culls[("idle", "")]["idle_seconds"] >= 4000

    upcoming = (await cull.http.get("api/upcoming", params={"minutes": 45})).json()
    assert {(u["user"], u["server"]) for u in upcoming} == {("cpu", "")}

    # cpu is due within the 30 min warning window: warned once, without our token
    await cull.cycle()
    warned = (hub.workdir.parent / "warned.txt").read_text().splitlines()
    assert len(warned) == 1
    user, due, saw_token = warned[0].split()
    assert (user, saw_token) == ("cpu", "False")
    assert due == upcoming[0]["due"]


async def test_status_page_and_bad_parameters(cull_hub) -> None:
    hub, api, cull = cull_hub
    await api.create_users(["late"])
    await start(api, "late", idle_seconds=4000)
    await cull.cycle()
    r = await cull.http.get("api/culls", params={"limit": "lots"})
    assert r.status_code == 400
    assert r.json()["message"] == "limit must be a whole number, not 'lots'"
    assert (await cull.http.get("api/upcoming", params={"minutes": 0})).status_code == 400
    status = (await cull.http.get("api/status")).json()
    assert status["timeout"] == 3600 and status["next_run"]
    page = hub.browser("admin").get(hub.service_url("cull"))
    assert page.status_code == 200
    assert "late" in page.text and "idle 1h06m" in page.text


async def test_metrics_count_culls_by_reason(cull_hub) -> None:
    hub, api, cull = cull_hub
    await api.create_users(["m1", "m2"])
    await start(api, "m1", idle_seconds=4000)
    await start(api, "m2", idle_seconds=4000)
    await cull.cycle()
    text = (await cull.http.get("metrics")).text
    assert 'hubservices_cull_servers_culled_total{reason="idle"} 2.0' in text
    assert "hubservices_cull_servers_examined 2.0" in text
    assert "hubservices_cull_last_success_timestamp_seconds" in text


@pytest.mark.parametrize("mode", ["dry-run", "cull-users"])
async def test_users_and_dry_run(tmp_path: Path, mode: str) -> None:
    """Short timeouts: users become idle in seconds. Admins are never removed."""
    dry = mode == "dry-run"
    config = tmp_path / "cull_config.py"
    config.write_text(
        "c.Culler.policies = ["
        "{'name': 'staff', 'groups': ['staff'], 'never': True},"
        "{'name': 'sprint', 'groups': ['sprint'], 'timeout': 0, 'max_age': 3}]\n"
    )
    args = [
        f"--config={config}",
        "--timeout=2",
        "--cull-every=3600",
        "--cull-users",
        "--cull-admin-users=false",
        "--max-age=3",
    ]
    hub = Hub(
        tmp_path / "hub",
        services=["cull"],
        service_args={"cull": args + ["--dry-run"] * dry},
        extra_config=LIGHT + 'c.JupyterHub.load_groups = {"staff": {"users": []}, '
        '"sprint": {"users": []}}\nc.Authenticator.admin_users = {"admin", "boss"}\n',
    )
    hub.start()
    try:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            token = await api.create_token("admin", scopes=["access:services!service=cull"])
            cull = CullClient(hub, token)
            await wait_first_cycle(cull)
            await api.create_users(["gone", "runner", "staffer", "sprinter"])
            await api.add_group_users("staff", ["staffer"])
            await api.add_group_users("sprint", ["sprinter"])
            await start(api, "runner", idle_seconds=10)
            await start(api, "staffer", idle_seconds=10)
            await start(api, "sprinter")
            await start(api, "boss", idle_seconds=10)
            await asyncio.sleep(3.5)
            cycle = await cull.cycle()
            names = {u["name"] for u in await api.list_users()}
            culls = {(c["kind"], c["user"]): c for c in await cull.culls()}
            await cull.http.aclose()
    finally:
        hub.stop()
    expected = {
        ("server", "runner"),
        ("user", "runner"),
        ("user", "gone"),
        ("server", "sprinter"),
        ("user", "sprinter"),
        ("server", "boss"),
    }
    assert set(culls) == expected
    assert culls[("server", "sprinter")]["reason"] == "max-age"
    assert {"admin", "boss", "staffer"} <= names  # admins and protected users stay
    if dry:
        assert {c["outcome"] for c in culls.values()} == {"dry-run"}
        assert {"gone", "runner", "sprinter"} <= names
        assert cycle["culled_servers"] == 0
    else:
        assert not {"gone", "runner", "sprinter"} & names
        assert cycle["culled_users"] == 3


async def test_stops_run_concurrently_and_a_changed_server_is_spared(tmp_path: Path) -> None:
    """Two stops at a time, never more; servers that changed after the listing are re-checked.

    Eight idle servers, each stop taking 2 s, ``--concurrency=2``: the re-checks of the last
    two come after the second wave of stops, by when one got activity and one was restarted.
    """
    hub = Hub(
        tmp_path / "hub",
        services=["cull"],
        service_args={"cull": ["--timeout=3600", "--cull-every=3600", "--concurrency=2"]},
        extra_config=LIGHT + "c.LightSpawner.stop_delay = 2.0\n",
    )
    with hub:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            token = await api.create_token("admin", scopes=["access:services!service=cull"])
            cull = CullClient(hub, token)
            await wait_first_cycle(cull)
            names = [f"w{i}" for i in range(8)]
            await api.create_users(names)
            await asyncio.gather(*(start(api, n, idle_seconds=4000) for n in names))
            log_start = hub.log_path.stat().st_size

            cycle = asyncio.create_task(cull.cycle())
            for _ in range(100):  # the first wave of stops is under way
                if (await servers_of(api, "w0")).get("", {}).get("pending") == "stop":
                    break
                await asyncio.sleep(0.05)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            await api.post(
                "users", "w6", "activity", json={"servers": {"": {"last_activity": now}}}
            )
            await api.delete("users", "w7", "server")
            await start(api, "w7", idle_seconds=4000)  # idle still, but another run
            result = await cycle

            assert result["culled_servers"] == 6
            assert {c["user"] for c in await cull.culls()} == set(names[:6])
            assert list(await servers_of(api, "w6")) == [""]
            assert list(await servers_of(api, "w7")) == [""]
            await cull.http.aclose()
        log = hub.log_path.read_bytes()[log_start:].decode(errors="replace")
    # the culler's stops under way at each stop's start (w7's is the test's own)
    in_flight = [
        set(line.split()) - {"w7"}
        for line in re.findall(r"LightSpawner: stops in flight: (.*)", log)
    ]
    assert max(map(len, in_flight)) == 2, in_flight  # concurrent, and bounded by --concurrency
    assert "Not culling w6: active" in log
    assert "Not culling w7: restarted since the listing" in log


async def test_hub_restarting_mid_cycle_is_survived(tmp_path: Path) -> None:
    token = "external-culler-token-" + os.urandom(8).hex()
    hub = Hub(
        tmp_path / "hub",
        services=[],
        extra_config=LIGHT
        + """
c.JupyterHub.cleanup_servers = False
c.LightSpawner.stop_delay = 1.0
"""
        + registered("cull", token),
    )
    hub.start()
    culler = None
    try:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            names = [f"slow{i}" for i in range(8)]
            await api.create_users(names)
            await asyncio.gather(*(start(api, n, idle_seconds=4000) for n in names))
        culler = ExternalService(
            "cull",
            token,
            hub.api_url,
            tmp_path / "data",
            "--timeout=600",
            "--cull-every=4",
            "--concurrency=2",
        )
        await culler.wait_for("Culling slow")  # the first cycle is stopping servers, two at a time
        hub.restart()
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            for _ in range(150):
                if not await api.list_users(state="ready"):
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("idle servers still running after the hub came back")
        assert culler.running, "the culler died with the hub"
    finally:
        out = culler.stop() if culler else ""
        hub.stop()
    assert "retry" in out, out
    assert "Traceback" not in out, out
    assert "api_token" not in out and token not in out


async def test_a_token_lacking_a_scope_is_named(
    hub: Hub, hub_api: HubAPI, unique, tmp_path
) -> None:
    user = unique("weak")
    await hub_api.create_users([user])
    token = await hub_api.create_token(user)
    culler = ExternalService("cull", token, hub.api_url, tmp_path, "--cull-every=3600")
    try:
        await culler.wait_for("Cull cycle failed")
        await asyncio.sleep(1)
        assert culler.running, "a failed cycle must not stop the service"
    finally:
        out = culler.stop()
    assert (
        "Cull cycle failed: hub API GET /users: 403, the service's token lacks scope list:users"
        in out
    )
    assert "Traceback" not in out
    assert token not in out


async def execute(ws_url: str, token: str, code: str) -> None:
    """Send one execute_request to a kernel over its websocket, as a notebook does."""
    request = HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})
    conn = await websocket_connect(request)
    session = os.urandom(8).hex()
    conn.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": os.urandom(8).hex(),
                    "username": "",
                    "session": session,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    conn.close()


async def test_a_busy_kernel_keeps_its_server(tmp_path: Path) -> None:
    """A real single-user server running a cell that sleeps is not culled while it runs."""
    hub = Hub(tmp_path / "hub", services=["cull"])
    hub.service_args["cull"] = [
        "--timeout=2",
        "--cull-every=3600",
        "--busy-kernels",
        "--busy-kernel-cap=0",
        f"--server-url={hub.url}",
    ]
    hub.start()
    try:
        async with (
            HubAPI(hub.api_url, hub.admin_token) as api,
            httpx.AsyncClient(
                base_url=f"{hub.url}/user/cruncher/",
                headers={"Authorization": f"token {hub.admin_token}"},
                timeout=30,
            ) as server,
        ):
            cull = CullClient(hub, await api.create_token("admin", scopes=["access:services"]))
            await wait_first_cycle(cull)
            await api.create_users(["cruncher"])
            await api.start_server("cruncher")
            for _ in range(300):
                if (await servers_of(api, "cruncher")).get("", {}).get("ready"):
                    break
                await asyncio.sleep(0.2)
            kernel = (await server.post("api/kernels", json={})).json()
            ws = f"ws://127.0.0.1:{hub.port}/user/cruncher/api/kernels/{kernel['id']}/channels"
            await execute(ws, hub.admin_token, "import time; time.sleep(120)")
            for _ in range(100):
                kernels = (await server.get("api/kernels")).json()
                if kernels[0]["execution_state"] == "busy":
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("the kernel never got busy")
            await asyncio.sleep(2.5)  # idle past the 2 s timeout, as the hub sees it

            busy = await cull.cycle()
            assert busy["kept_busy"] == 1 and busy["culled_servers"] == 0
            assert "" in await servers_of(api, "cruncher")
            # asked with a token the hub issued cruncher for this server, revoked after
            assert "Service cull requested API token for cruncher" in hub.log_tail(400)
            tokens = (await api.get("users", "cruncher", "tokens"))["api_tokens"]
            assert not [t for t in tokens if "culler asks" in (t["note"] or "")], tokens

            await server.post(f"api/kernels/{kernel['id']}/interrupt")
            for _ in range(100):
                if (await server.get("api/kernels")).json()[0]["execution_state"] == "idle":
                    break
                await asyncio.sleep(0.2)
            done = await cull.cycle()
            assert done["culled_servers"] == 1
            assert await servers_of(api, "cruncher") == {}
            await cull.http.aclose()
    finally:
        hub.stop()


def slow_stop_hub(tmp_path: Path, token: str, stop_delay: float) -> Hub:
    """A hub whose servers take ``stop_delay`` s to stop, for a culler run by hand."""
    return Hub(
        tmp_path / "hub",
        services=[],
        extra_config=LIGHT
        + f"c.LightSpawner.stop_delay = {stop_delay}\n"
        + registered("cull", token),
    )


async def culling_under_way(
    api: HubAPI, hub: Hub, token: str, data: Path, names: list[str], *args: str
) -> ExternalService:
    """Idle servers for ``names``, and a culler run by hand (two stops at a time) whose first
    stops are in flight when this returns."""
    await api.create_users(names)
    await asyncio.gather(*(start(api, n, idle_seconds=4000) for n in names))
    culler = ExternalService(
        "cull",
        token,
        hub.api_url,
        data,
        "--timeout=600",
        "--cull-every=3600",
        "--concurrency=2",
        *args,
    )
    for _ in range(600):
        users = await api.list_users(state="active")
        if any(u["servers"].get("", {}).get("pending") == "stop" for u in users):
            return culler
        await asyncio.sleep(0.1)
    culler.stop()
    pytest.fail("no stop began")


@pytest.mark.parametrize("grace", [30, 0])
async def test_sigterm_mid_cycle_leaves_every_stop_in_the_audit(tmp_path: Path, grace: int) -> None:
    """SIGTERM while stops are in flight: with a grace period the cycle finishes them and is
    recorded with what it left for next time; without one it is recorded as interrupted. Either
    way every server the hub stopped has its audit row, and nothing raises."""
    token = "external-culler-token-" + os.urandom(8).hex()
    hub = slow_stop_hub(tmp_path, token, stop_delay=3.0)
    names = [f"s{i}" for i in range(8)]
    hub.start()
    culler = None
    try:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            culler = await culling_under_way(
                api, hub, token, tmp_path / "data", names, f"--shutdown-grace={grace}"
            )
            out = culler.stop()  # SIGTERM
            assert culler.proc.returncode == 0, out
            for _ in range(100):  # the hub finishes the stops it was asked for
                users = await api.list_users(state="active")
                if not any(u["servers"].get("", {}).get("pending") for u in users):
                    break
                await asyncio.sleep(0.2)
            running = {u["name"] for u in await api.list_users(state="ready")}
    finally:
        if culler and culler.running:
            out = culler.stop()
        hub.stop()
    stopped = set(names) - running
    with sqlite3.connect(tmp_path / "data" / "hubservices.sqlite") as db:
        culls = dict(db.execute("SELECT user, outcome FROM culls").fetchall())
        [(finished, error)] = db.execute("SELECT finished_at, error FROM cull_cycles").fetchall()
    assert "Traceback" not in out, out
    assert stopped and running, "SIGTERM came mid-cycle: some stopped, some left"
    assert stopped <= set(culls), (stopped, culls)  # no server the hub stopped lacks its row
    assert finished is not None
    if grace:
        assert set(culls.values()) == {"stopped"}, culls  # the stops in flight were waited for
        assert set(culls) == stopped
        assert error == f"interrupted by shutdown: {len(running)} due left for the next cycle"
    else:
        assert "requested" in culls.values(), culls  # sent, answer not waited for
        assert error == "interrupted by shutdown: stops in flight were not waited for"
        assert "Cull cycle interrupted by shutdown" in out


async def test_a_database_locked_35s_mid_cycle_loses_no_audit_row(tmp_path: Path) -> None:
    """Another connection holds SQLite's exclusive lock for 35 s (past the 30 s busy timeout)
    while the first stops are in flight: the culler logs a retry, sends no new stop meanwhile,
    and in the end every server the hub stopped has its row with its outcome."""
    token = "external-culler-token-" + os.urandom(8).hex()
    hub = slow_stop_hub(tmp_path, token, stop_delay=2.0)
    names = [f"l{i}" for i in range(6)]
    database = tmp_path / "data" / "hubservices.sqlite"
    hub.start()
    culler = None
    locker = None
    try:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            culler = await culling_under_way(api, hub, token, tmp_path / "data", names)
            locker = sqlite3.connect(database, isolation_level=None, timeout=30)
            locker.execute("BEGIN EXCLUSIVE")
            await asyncio.sleep(5)  # the first wave's stops finish; their rows cannot be updated
            stopped_before = len(names) - len(await api.list_users(state="active"))
            await asyncio.sleep(30)
            stopped_while_locked = len(names) - len(await api.list_users(state="active"))
            locker.execute("COMMIT")
            for _ in range(300):
                if not await api.list_users(state="active"):
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("the culler did not carry on once the lock was gone")
            await asyncio.sleep(2)  # the last outcomes land
    finally:
        if locker:
            locker.close()
        out = culler.stop() if culler else ""
        hub.stop()
    with sqlite3.connect(database) as db:
        culls = dict(db.execute("SELECT user, outcome FROM culls").fetchall())
        [(finished, error)] = db.execute("SELECT finished_at, error FROM cull_cycles").fetchall()
    assert stopped_before == stopped_while_locked <= 2, "no new stop went out during the lock"
    assert culls == dict.fromkeys(names, "stopped"), culls
    assert finished is not None and error is None
    assert "Audit write add failed (database is locked); retry 1 in 0.5s" in out or (
        "Audit write set_outcome failed (database is locked); retry 1 in 0.5s" in out
    ), out
    assert "Traceback" not in out, out


async def test_servers_answering_nonsense_about_kernels_are_culled(tmp_path: Path) -> None:
    """LightSpawner servers answer ``GET api/kernels`` with plain text: through the real hub
    (tokens issued for each server, hostile names included, then revoked), each answer is
    logged, counts as not busy, and every server is culled in the same cycle."""
    hub = Hub(tmp_path / "hub", services=["cull"], extra_config=LIGHT)
    hub.service_args["cull"] = [
        "--timeout=3600",
        "--cull-every=3600",
        "--busy-kernels",
        f"--server-url={hub.url}",
    ]
    with hub:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            cull = CullClient(hub, await api.create_token("admin", scopes=["access:services"]))
            await wait_first_cycle(cull)
            await api.create_users(["plain", "dana#1"])
            await start(api, "plain", idle_seconds=4000)
            await start(api, "dana#1", "gpu", idle_seconds=4000)
            log_start = hub.log_path.stat().st_size
            cycle = await cull.cycle()
            assert cycle["culled_servers"] == 2 and cycle["kept_busy"] == 0
            assert await servers_of(api, "plain") == {}
            assert await servers_of(api, "dana#1") == {}
            for user in ("plain", "dana#1"):
                tokens = (await api.get("users", user, "tokens"))["api_tokens"]
                assert not [t for t in tokens if "culler asks" in (t["note"] or "")], tokens
            await cull.http.aclose()
        log = hub.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Service cull requested API token for dana#1" in log
    assert "Could not ask plain about its kernels (Expecting value" in log
    assert "Could not ask dana#1/gpu about its kernels (Expecting value" in log
    assert "Traceback" not in log
