"""The culler under faults a real hub cannot produce on demand: hostile servers, a locked audit.

Fault injection only (GUIDE): the hub is tests/unit/fakehub.py, the "single-user servers" a
tornado app answering what a server its user controls might answer. The same behaviours are
checked against a real hub and real servers in tests/integration/test_cull.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tornado import httpserver, netutil, web

from hubservices.common import db as db_module
from hubservices.common.db import Database
from hubservices.common.hubapi import HubAPI
from hubservices.common.timeutil import utcnow
from hubservices.cull import cycle as cycle_module
from hubservices.cull.audit import Audit
from hubservices.cull.cycle import CullCycle, CullMetrics, CullOptions, send_warning
from hubservices.cull.policy import Policy
from tests.unit.fakehub import FakeHub, Reply

#: What each hostile server answers to GET api/kernels; "honest" is a server with a busy kernel.
REPLIES: dict[str, bytes] = {
    "shape": b'{"a": 1}',
    "types": b'[{"execution_state": 5}, "busy"]',
    "huge": b'[{"execution_state": "busy"}' + b', {"execution_state": "idle"}' * 60_000 + b"]",
    "deep": b"[" * 200_000,
    "notjson": b"\xff\xfe busy",
    "slow": b"[]",
    "honest": b'[{"execution_state": "busy"}]',
}


class _HostileServer(web.RequestHandler):
    """``/user/<name>/api/kernels``: the name's reply, after 30 s for "slow"."""

    def initialize(self, seen: dict[str, str]) -> None:
        self.seen = seen

    async def get(self, name: str) -> None:
        self.seen[name] = self.request.headers.get("Authorization", "")
        if name == "slow":
            await asyncio.sleep(30)
        self.write(REPLIES[name])


def _server_model(name: str) -> dict[str, Any]:
    started = utcnow() - timedelta(hours=3)
    return {
        "name": "",
        "ready": True,
        "pending": None,
        "started": started.isoformat() + "Z",
        "last_activity": started.isoformat() + "Z",
        "url": f"/user/{name}/",
    }


@pytest.fixture
async def servers() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """The hostile servers' base URL and the Authorization header each one received."""
    seen: dict[str, str] = {}
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    server = httpserver.HTTPServer(
        web.Application([(r"/user/([^/]+)/api/kernels", _HostileServer, {"seen": seen})])
    )
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}", seen
    server.stop()


@pytest.fixture
def audit(tmp_path: Path) -> Audit:
    return _audit(tmp_path)


def _audit(tmp_path: Path) -> Audit:
    db = Database(
        f"sqlite:///{tmp_path / 'cull.sqlite'}",
        migrations="hubservices.cull.migrations",
        version_table="alembic_version_cull",
    )
    db.upgrade()
    return Audit(db)


def _hub_with_servers(names: list[str]) -> FakeHub:
    hub = FakeHub()
    hub.users = [{"kind": "user", "name": n, "servers": {"": _server_model(n)}} for n in names]
    for i, name in enumerate(names):
        hub.script(
            "POST", f"/users/{name}/tokens", Reply(201, {"token": f"t-{name}", "id": f"a{i}"})
        )
        hub.script("DELETE", f"/users/{name}/tokens/a{i}", Reply(204))
        hub.script("DELETE", f"/users/{name}/server", Reply(204))
    return hub


async def test_hostile_kernel_replies_count_as_not_busy_and_see_no_culler_token(
    servers, audit: Audit, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cycle_module, "KERNELS_CHECK_SECONDS", 2)
    url, seen = servers
    names = list(REPLIES)
    hub = _hub_with_servers(names)
    await hub.start()
    culler_token = "the-cullers-own-token"
    try:
        async with HubAPI(hub.url, culler_token, retries=0) as api:
            options = CullOptions(busy_kernels=True, busy_kernel_cap=0, server_url=url)
            cycle = CullCycle(
                api, Policy(timeout=3600), options, audit, CullMetrics(CollectorRegistry())
            )
            with caplog.at_level(logging.WARNING):
                result = await cycle.run()
    finally:
        await hub.stop()

    assert result.kept_busy == 1  # the honest server with a busy kernel
    assert result.culled_servers == len(names) - 1  # every hostile one, none skipped
    stopped = {
        r.path.split("/")[4]
        for r in hub.received
        if r.method == "DELETE" and r.path.endswith("/server")
    }
    assert stopped == set(names) - {"honest"}
    # each server saw only a token issued for it, never the culler's; each was revoked
    assert seen == {name: f"token t-{name}" for name in names}
    for name in names:
        [issued] = [json.loads(r.body) for r in hub.requests_to(f"/users/{name}/tokens")]
        assert issued["scopes"] == [f"access:servers!server={name}/"]
        assert 0 < issued["expires_in"] <= 60
        assert [
            r.method for r in hub.received if r.path.startswith(f"/hub/api/users/{name}/tokens/")
        ] == ["DELETE"]
    hostile = [r.getMessage() for r in caplog.records if "Could not ask" in r.getMessage()]
    assert len(hostile) == len(names) - 1, hostile
    assert any("shape" in m and "expected a list of kernels, got dict" in m for m in hostile)
    assert any("huge" in m and "larger than" in m for m in hostile)
    assert any("slow" in m and "TimeoutError" in m for m in hostile)
    assert culler_token not in caplog.text
    assert {c.user for c in audit.recent_culls(100)} == set(names) - {"honest"}


async def test_a_locked_audit_database_delays_stops_and_loses_no_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Mid-cycle, another connection holds SQLite's exclusive lock past the busy timeout: the
    culler logs and retries, sends no stop without its row, and once the lock is gone every
    stop the hub made has its row, with its outcome."""
    # production waits 30 s for a lock before failing; 0.2 s here, so writes fail and retry
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_SECONDS", 0.2)
    audit = _audit(tmp_path)
    names = [f"u{i}" for i in range(6)]
    hub = _hub_with_servers(names)
    await hub.start()
    locker = sqlite3.connect(
        tmp_path / "cull.sqlite", isolation_level=None, check_same_thread=False
    )
    locked = threading.Event()
    start_cycle = audit.start_cycle

    def start_then_lock(dry_run: bool, at: datetime) -> int:  # in a writer's thread
        cycle_id = start_cycle(dry_run, at)
        locker.execute("BEGIN EXCLUSIVE")
        locked.set()
        return cycle_id

    monkeypatch.setattr(audit, "start_cycle", start_then_lock)
    try:
        async with HubAPI(hub.url, "token", retries=0) as api:
            metrics = CullMetrics(CollectorRegistry())
            cycle = CullCycle(api, Policy(timeout=3600), CullOptions(concurrency=2), audit, metrics)
            with caplog.at_level(logging.WARNING):
                task = asyncio.create_task(cycle.run())
                assert await asyncio.to_thread(locked.wait, 10)
                await asyncio.sleep(3)
                sent_while_locked = [r for r in hub.received if r.method == "DELETE"]
                locker.execute("COMMIT")
                result = await asyncio.wait_for(task, 60)
    finally:
        locker.close()
        await hub.stop()
    assert sent_while_locked == []  # no stop went out before its row could be written
    assert result.culled_servers == len(names)
    rows = audit.recent_culls(100)
    assert sorted(r.user for r in rows) == names
    assert {r.outcome for r in rows} == {"stopped"}
    assert "Audit write add failed (database is locked); retry 1 in 0.5s" in caplog.text
    [cycle_row] = audit.recent_cycles(1)
    assert cycle_row.finished_at is not None and cycle_row.error is None


async def test_warn_command_gets_no_secret_from_the_service_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token-secret")
    monkeypatch.setenv("HUBSERVICES_DATABASE_URL", "postgresql://cull:db-password@db/cull")
    monkeypatch.setenv("SMTP_PASSWORD", "mail-secret")
    out = tmp_path / "env.json"
    dump = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    options = CullOptions(warn_command=(sys.executable, "-c", dump, str(out)))
    await send_warning(options, {"user": "ana", "server": "", "due": "soon", "why": "idle"})
    env = json.loads(out.read_text())
    assert env["CULL_USER"] == "ana" and env["CULL_WHY"] == "idle"
    assert "PATH" in env
    for secret in ("hub-token-secret", "db-password", "mail-secret"):
        assert not any(secret in value for value in env.values()), secret
