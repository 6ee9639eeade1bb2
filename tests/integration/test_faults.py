"""Faults a real deployment meets, against a real hub: what each service does and what is lost.

The services run here as a systemd unit runs them (external to the hub, started by hand), so
that they can be started before the hub and outlive its token. docs/reliability.md lists these
with the figures and the command that reproduces each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hubservices.common.hubapi import HubAPI
from hubservices.common.hubconfig import required_scopes
from tests.harness.external import ExternalService, registered
from tests.harness.hub import Hub
from tests.unit.fakehub import FakeHub, Reply, error

pytestmark = pytest.mark.hub

TOKEN = "full-disk-culler-" + os.urandom(8).hex()
LIGHT = 'c.JupyterHub.spawner_class = "tests.harness.lightspawner.LightSpawner"\n'


def sessions_of(data: Path, user: str) -> list[tuple]:
    with sqlite3.connect(data / "hubservices.sqlite") as db:
        return db.execute(
            "SELECT server, started, ended FROM stats_sessions WHERE user = ?", (user,)
        ).fetchall()


async def test_services_started_before_the_hub_catch_up(tmp_path: Path) -> None:
    """A systemd boot order with the services first: they wait for the hub, then work."""
    tokens = {name: f"{name}-token-" + os.urandom(8).hex() for name in ("cull", "stats")}
    hub = Hub(
        tmp_path / "hub",
        services=[],
        extra_config=LIGHT + "".join(registered(n, t) for n, t in tokens.items()),
    )
    services = {
        "cull": ExternalService(
            "cull",
            tokens["cull"],
            hub.api_url,
            tmp_path / "cull",
            "--timeout=600",
            "--cull-every=3",
        ),
        "stats": ExternalService(
            "stats", tokens["stats"], hub.api_url, tmp_path / "stats", "--poll-interval=2"
        ),
    }
    outputs = {}
    try:
        for service in services.values():
            await service.wait_for("ConnectError")  # the first cycle and polls find no hub...
            await service.wait_for("retry 3/")  # ...and keep trying
        hub.start()
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            await api.create_users(["early", "idle"])
            await api.post("users", "early", "server", json={})
            await api.post("users", "idle", "server", json={"idle_seconds": 4000})
            deadline = time.monotonic() + 60
            while (await api.get_user("idle")).get("servers"):
                assert time.monotonic() < deadline, "the culler never culled once the hub came"
                await asyncio.sleep(0.5)
            while not sessions_of(tmp_path / "stats", "early"):
                assert time.monotonic() < deadline, "stats never recorded once the hub came"
                await asyncio.sleep(0.5)
            assert (await api.get_user("early")).get("servers"), "an active server was culled"
    finally:
        outputs = {name: service.stop() for name, service in services.items()}
        hub.stop()
    for name, out in outputs.items():
        assert "ConnectError" in out, f"{name} did not say why it waited:\n{out}"
        assert tokens[name] not in out, f"{name} logged its token"


async def test_a_revoked_token_is_named_and_not_fatal(tmp_path: Path) -> None:
    """An admin revokes the token the culler uses: it says so each cycle and stays up, and a
    new token (a restart of the unit with it) resumes culling, nothing lost in between."""
    hub = Hub(
        tmp_path / "hub",
        services=[],
        extra_config=LIGHT
        + 'c.JupyterHub.load_roles.append({"name": "culler-account", "users": ["culler"],'
        f' "scopes": {required_scopes("cull")!r}}})\n',
    )
    with hub:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            await api.create_users(["dozer"])  # "culler" comes from its role in load_roles
            token = await api.create_token("culler", scopes=required_scopes("cull"))
            culler = ExternalService(
                "cull", token, hub.api_url, tmp_path / "cull", "--timeout=600", "--cull-every=2"
            )
            try:
                await culler.wait_for("Cycle 1:")  # a cycle with the good token: nothing to do
                tokens = (await api.get("users", "culler", "tokens"))["api_tokens"]
                for t in tokens:
                    await api.delete("users", "culler", "tokens", t["id"])
                await api.post("users", "dozer", "server", json={"idle_seconds": 4000})
                await culler.wait_for("Cull cycle failed")
                await asyncio.sleep(3)  # more cycles with the revoked token
                assert culler.running, "the culler died of a revoked token"
                assert (await api.get_user("dozer")).get("servers"), "culled without a token?"
            finally:
                out = culler.stop()
            assert "Traceback" not in out, out
            assert token not in out
            revoked_lines = [line for line in out.splitlines() if "Cull cycle failed" in line]
            assert revoked_lines and all("token" in line for line in revoked_lines), out

            fresh = await api.create_token("culler", scopes=required_scopes("cull"))
            culler = ExternalService(
                "cull", fresh, hub.api_url, tmp_path / "cull", "--timeout=600", "--cull-every=2"
            )
            try:
                deadline = time.monotonic() + 60
                while (await api.get_user("dozer")).get("servers"):
                    assert time.monotonic() < deadline, "not culled with the new token"
                    await asyncio.sleep(0.5)
            finally:
                culler.stop()


def idle_user(name: str, idle: timedelta) -> dict:
    """A user as the hub lists it, with a default server idle for ``idle``."""
    last = (datetime.now(UTC) - idle).isoformat().replace("+00:00", "Z")
    server = {"name": "", "ready": True, "pending": None, "started": last, "last_activity": last}
    return {"kind": "user", "name": name, "servers": {"": server}, "last_activity": last}


async def test_429_and_5xx_storms_are_waited_out(tmp_path: Path) -> None:
    """A hub that is overloaded (429 with Retry-After, then 503s) while listing and while
    stopping: the culler backs off, each idle server is stopped once and recorded once.
    A fake hub, because a real one does not answer 429 or 503 on demand."""
    names = ["ivy", "jon", "kim"]
    hub = FakeHub()
    hub.users = [idle_user(n, timedelta(hours=2)) for n in names]
    hub.script(
        "GET",
        "/users",
        *[error(429, "Too many requests", **{"Retry-After": "1"})] * 2,
        *[error(503, "Service Unavailable")] * 3,
    )
    for name in names:
        hub.script("DELETE", f"/users/{name}/server", *[error(502, "Bad Gateway")] * 2, Reply(204))
    await hub.start()
    culler = ExternalService(
        "cull", "storm-token", hub.url, tmp_path / "cull", "--timeout=600", "--cull-every=3600"
    )
    try:
        await culler.wait_for("Cycle 1:")
        for name in names:
            await culler.wait_for(f"Culling {name}")
        deadline = time.monotonic() + 30
        # each row is written "requested" before its stop is sent, then gets the outcome
        while sorted(audited := culls_in(tmp_path / "cull")) != [(n, "", "stopped") for n in names]:
            assert time.monotonic() < deadline, f"culls not recorded: {audited}"
            await asyncio.sleep(0.2)
    finally:
        out = culler.stop()
        await hub.stop()
    assert sorted(audited) == [(n, "", "stopped") for n in names]
    for name in names:
        deletes = hub.requests_to(f"/users/{name}/server")
        assert [r.method for r in deletes] == ["DELETE"] * 3  # two refused, one done, no more
    assert "GET /users: 429, retry 1/6 in 1.0s" in out, out  # the hub's Retry-After, honoured
    assert "GET /users: 503, retry 5/6" in out, out
    assert "DELETE /users/ivy/server: 502, retry 2/6" in out, out
    assert "Traceback" not in out, out


def culls_in(data: Path) -> list[tuple]:
    with sqlite3.connect(data / "hubservices.sqlite") as db:
        return db.execute("SELECT user, server, outcome FROM culls").fetchall()


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (root only: the machines that run the tests)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write zeros into ``disk`` until it is full; the file to delete to free it again."""
    filler = disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


async def test_a_full_disk_under_the_audit_database_loses_no_row(tmp_path: Path) -> None:
    """The audit database's disk fills up: no server is stopped without its row; once space
    is freed, the row lands and the stop goes out."""
    hub = Hub(tmp_path / "hub", services=[], extra_config=LIGHT + registered("cull", TOKEN))
    with hub, small_disk(tmp_path / "disk") as disk:
        culler = ExternalService(
            "cull", TOKEN, hub.api_url, disk / "cull", "--timeout=600", "--cull-every=2"
        )
        try:
            await culler.wait_for("Cycle 2:")  # the database and its first rows are written
            filler = fill(disk)
            async with HubAPI(hub.api_url, hub.admin_token) as api:
                await api.create_users(["sleeper"])
                await api.post("users", "sleeper", "server", json={"idle_seconds": 4000})
                await culler.wait_for("Audit write")
                await asyncio.sleep(3)  # more cycles on a full disk
                assert (await api.get_user("sleeper")).get("servers"), "stopped, unrecorded"
                filler.unlink()
                deadline = time.monotonic() + 60
                while (await api.get_user("sleeper")).get("servers"):
                    assert time.monotonic() < deadline, "not culled once the disk had space"
                    await asyncio.sleep(0.5)
            deadline = time.monotonic() + 30
            while ("sleeper", "", "stopped") not in culls_in(disk / "cull"):
                assert time.monotonic() < deadline, culls_in(disk / "cull")
                await asyncio.sleep(0.5)
        finally:
            out = culler.stop()
    assert "Traceback" not in out, out
