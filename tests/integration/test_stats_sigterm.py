"""SIGTERM in the middle of a stats poll, under a real hub, on PostgreSQL: no half-written poll.

A poll's writes are one transaction. The test holds a row lock that the poll's transaction
needs near its end (a member leaving a group), so the poll stops mid-transaction with its
earlier writes made but not committed; then SIGTERMs the service. The service must exit
although its write is stuck, and what the stuck poll wrote must be gone, not half there; the
service the hub starts again then stores that poll's changes once. (PostgreSQL: a SQLite
writer holds the whole database, so a poll there cannot be stopped between two writes.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine, create_engine, text

from hubservices.common.hubapi import HubAPI
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

CONFIG = """
c.JupyterHub.spawner_class = "tests.harness.lightspawner.LightSpawner"
c.JupyterHub.cleanup_servers = False
"""


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"not after {timeout}s: {what}"
        time.sleep(0.3)
    return result


def stats_process(hub: Hub) -> psutil.Process | None:
    """The stats service process the hub runs now, if any."""
    for child in psutil.Process(hub.pid).children():
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[1:3] == ["-m", "hubservices.stats"]:
                return child
    return None


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


def one(engine: Engine, sql: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


async def test_sigterm_mid_poll_leaves_no_half_written_poll(
    tmp_path: Path, postgres_url: str, pg: Engine
) -> None:
    hub = Hub(
        tmp_path,
        services=["stats"],
        # every poll a full sync: the leaver's group membership, without a server, is stored
        # at the next poll
        service_args={
            "stats": ["--poll-interval=1", "--sync-interval=0", f"--db-url={postgres_url}"]
        },
        extra_config=CONFIG,
    )
    with hub, pg.connect() as locker:
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            await api.create_users(["runner", "leaver"])
            await api.create_group("grp")
            await api.add_group_users("grp", ["leaver"])
            await api.start_server("runner")
            membership = "SELECT count(*) FROM stats_group_membership WHERE \"user\" = 'leaver'"
            wait_until(lambda: one(pg, membership) == 1, 30, "leaver's membership stored")
            open_session = "SELECT count(*) FROM stats_sessions WHERE \"user\" = 'runner'"
            wait_until(lambda: one(pg, open_session) == 1, 30, "runner's session stored")

            # hold the row the poll must update when leaver leaves, then let leaver leave
            tx = locker.begin()
            locker.execute(
                text("SELECT id FROM stats_group_membership WHERE \"user\" = 'leaver' FOR UPDATE")
            )
            last_seen_before: datetime = one(
                pg, "SELECT last_seen FROM stats_sessions WHERE \"user\" = 'runner'"
            )
            await api.delete("groups", "grp", "users", json={"users": ["leaver"]})

            # the poll is stuck on that row, after writing (it holds a transaction id)
            stuck = (
                "SELECT backend_xid::text FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND backend_xid IS NOT NULL AND query LIKE 'UPDATE stats_group_membership%'"
            )
            xid = wait_until(lambda: one(pg, stuck), 30, "a poll waiting on the locked row")
            status = f"SELECT txid_status({xid})"  # a fresh cluster: xid epoch 0
            assert one(pg, status) == "in progress"
            # it has moved the running session's last_seen, but nobody else sees that yet
            assert one(pg, "SELECT last_seen FROM stats_sessions") == last_seen_before

            service = stats_process(hub)
            assert service is not None
            service.terminate()
            # it exits although its write is stuck behind our lock (wait raises if it hangs;
            # the hub, its parent, reaps it, so there is no exit code to read here)
            service.wait(timeout=60)
            # PostgreSQL notices the closed connection once the lock lets the backend go on;
            # its transaction, which no COMMIT can reach any more, is then rolled back whole
            tx.rollback()
            wait_until(lambda: one(pg, status) == "aborted", 30, "the stuck poll rolled back")

            # the hub starts the service again; its first poll stores the change, once
            wait_until(lambda: stats_process(hub), 120, "the hub restarting the stats service")
            still_member = membership + ' AND "left" IS NULL'
            wait_until(lambda: one(pg, still_member) == 0, 60, "leaver's leaving stored")
            assert one(pg, membership) == 1
            assert one(pg, open_session) == 1
            assert one(pg, "SELECT last_seen FROM stats_sessions") > last_seen_before
