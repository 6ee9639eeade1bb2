"""A large hub: what our stats and cull services cost it, and how fast they are there.

One real JupyterHub (LightSpawner: no process per server) with ``--users`` users in
``--groups`` groups and ``--servers`` running default servers, ``--idle`` of them idle; the
stats service attached as the hub starts it. Then, in this order:

- stats: our ``Poller`` in the bench process (a token with the stats service's scopes): a
  first full sync, a full sync with nothing changed, a steady poll (users with a server); wall
  time, hub requests, time waiting for the hub and the hub's CPU for each, against the hub's
  CPU for scraping its own ``/hub/metrics``;
- cull: one cycle of ours and one of jupyterhub-idle-culler (``bench.cull_bench``'s comparison).

The dashboard and exports over 50,000 users and a year need no hub: ``bench.stats_bench --only
report --report-users 50000`` measures them.

Run from the project root: ``.venv/bin/python -m bench.scale_bench [--write-docs]``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jupyterhub
import psutil
from jupyterhub import orm
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, insert, select

from bench import cull_bench
from bench.common import (
    DATABASES,
    Databases,
    add_db_option,
    add_output_options,
    chosen_databases,
    docs_section,
    percentile,
    publish,
    run_on_hub,
)
from bench.cull_bench import (
    FILL_TIMEOUT,
    Layout,
    compare,
    start_servers,
    tree_cpu,
    wait_ready,
)
from bench.stats_bench import HubCost, after_service_poll, open_db
from hubservices.common.hubapi import HubAPI
from hubservices.stats.app import Stats
from hubservices.stats.metrics import PollMetrics
from hubservices.stats.poller import Poller
from hubservices.stats.store import StatsStore
from tests.harness.hub import Hub

TITLE = "Scale"
#: Seconds between the stats service's polls and full syncs, as in its defaults.
POLL_INTERVAL, SYNC_INTERVAL = 60, 3600
#: The attached service's poll interval: short, so that the bench need not wait long for a poll
#: to have just finished before its own.
SERVICE_POLL_INTERVAL = 30
#: Prometheus scrapes of /hub/metrics per minute (scrape_interval 15 s).
SCRAPES_PER_MINUTE = 4


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def insert_users(db_url: str, names: list[str]) -> float:
    """Users straight into the running hub's database, as ``POST /users`` leaves them (a row
    and the ``user`` role); seconds it took. Through the API, 50,000 users take the hub about
    15 minutes (a few commits each), longer than everything measured after."""
    tic = time.perf_counter()
    users, role_map = orm.User.__table__, orm.Base.metadata.tables["user_role_map"]
    roles = orm.Role.__table__
    engine = create_engine(db_url)
    try:
        with engine.begin() as db:
            role = db.execute(select(roles.c.id).where(roles.c.name == "user")).scalar_one()
            created = datetime.now(UTC).replace(tzinfo=None)
            db.execute(
                insert(users), [{"name": n, "admin": False, "created": created} for n in names]
            )
            wanted = set(names)  # not IN (...): SQLite allows 32,766 parameters a statement
            ids = [i for i, name in db.execute(select(users.c.id, users.c.name)) if name in wanted]
            db.execute(
                insert(role_map),
                [{"user_id": i, "role_id": role, "managed_by_auth": False} for i in ids],
            )
    finally:
        engine.dispose()
    return time.perf_counter() - tic


async def add_groups(api: HubAPI, users: list[str], groups: int) -> float:
    """``groups`` groups splitting ``users`` evenly; seconds it took."""
    tic = time.perf_counter()
    size = -(-len(users) // groups)
    for g in range(groups):
        await api.create_group(f"course{g:03d}")
        members = users[g * size : (g + 1) * size]
        for i in range(0, len(members), 1000):
            await api.add_group_users(f"course{g:03d}", members[i : i + 1000])
    return time.perf_counter() - tic


async def stats_figures(
    args: argparse.Namespace, hub: Hub, direct: HubAPI, dbs: Databases
) -> list[str]:
    """Rows of the stats table: each kind of poll on each database, the hub's own metrics
    scrape, the stats service's memory, and what the stats service costs the hub a minute."""
    assert hub.proc is not None
    hub_proc = psutil.Process(hub.proc.pid)
    token = await direct.create_token("admin", scopes=Stats().required_scopes())
    scrape_token = await direct.create_token("admin", scopes=["access:services!service=stats"])
    auth = {"Authorization": f"Bearer {scrape_token}"}
    cost = HubCost()
    rows = []
    hub_cpu: dict[bool, float] = {}
    async with (
        HubAPI(hub.api_url, token, observer=cost, page_size=200) as client,
        httpx.AsyncClient(timeout=60) as http,
    ):
        for kind in chosen_databases(args):
            db = open_db(dbs.new(kind, "scale-stats"))
            store = StatsStore(db, bucket_seconds=900, retention=None)
            metrics = PollMetrics(CollectorRegistry())
            poller = Poller(
                client,
                store,
                metrics,
                interval=POLL_INTERVAL,
                sync_interval=SYNC_INTERVAL,
                groups=set(),
            )
            polls = [
                ("first full sync (opens every session and membership)", True),
                ("full sync, nothing changed", True),
                ("steady poll (users with a running or pending server)", False),
            ]
            for label, full in polls:
                if full:
                    poller.synced = None  # the next poll is a full sync
                await after_service_poll(http, hub, auth, timeout=SERVICE_POLL_INTERVAL * 3)
                before, waited, cpu = cost.requests, cost.seconds, tree_cpu(hub_proc)
                tic = time.perf_counter()
                await poller.poll()
                wall = time.perf_counter() - tic
                if metrics.poll_errors._value.get():
                    raise RuntimeError("a poll failed")
                hub_cpu[full] = tree_cpu(hub_proc) - cpu
                requests = cost.requests - before
                if full:
                    target = f"< 20 s: {met(wall < 20)}"
                else:
                    target = f"< 2 s: {met(wall < 2)}; ≤ 40 requests: {met(requests <= 40)}"
                rows.append(
                    f"| stats ({DATABASES[kind]}): {label} | {wall:.2f} s | {requests} | "
                    f"{cost.seconds - waited:.2f} s | {hub_cpu[full]:.2f} s | {target} |"
                )
                print(rows[-1], flush=True)
            db.dispose()

        times, cpu = [], tree_cpu(hub_proc)
        for _ in range(args.scrapes):
            tic = time.perf_counter()
            (await http.get(f"{hub.url}/hub/metrics")).raise_for_status()
            times.append(time.perf_counter() - tic)
        scrape_cpu = (tree_cpu(hub_proc) - cpu) / args.scrapes
        rows.append(
            f"| the hub's own `/hub/metrics` scrape (median of {args.scrapes}) "
            f"| {percentile(times, 50):.3f} s | | | {scrape_cpu:.3f} s | |"
        )
    service = next(
        p for p in hub_proc.children(recursive=True) if "hubservices.stats" in p.cmdline()
    )
    rows.append(
        f"| the stats service's memory (RSS) after its own polls and full sync "
        f"| {service.memory_info().rss / 2**20:.0f} MB | | | | < 400 MB: "
        f"{met(service.memory_info().rss < 400 * 2**20)} |"
    )
    per_minute = hub_cpu[False] * 60 / POLL_INTERVAL + hub_cpu[True] * 60 / SYNC_INTERVAL
    rows += [
        "",
        f"Hub CPU per minute spent on the stats service (a steady poll every {POLL_INTERVAL} s, "
        f"a full sync every {SYNC_INTERVAL} s): **{per_minute:.2f} s**, against "
        f"{scrape_cpu * SCRAPES_PER_MINUTE:.2f} s for Prometheus scraping `/hub/metrics` every "
        f"{60 // SCRAPES_PER_MINUTE} s. Before 2026-12-02 every poll was a full sync: "
        f"{hub_cpu[True] * 60 / POLL_INTERVAL:.2f} s per minute.",
    ]
    return rows


async def bench(args: argparse.Namespace, hub: Hub, dbs: Databases) -> list[str]:
    layout = Layout.make(args.users, args.servers, args.idle)
    # A long timeout: filling a hub of 50,000 users, a start can wait minutes for the hub, and a
    # POST that timed out is not resent (the hub may have acted on it).
    direct_client = HubAPI(
        hub.api_url, hub.admin_token, concurrency=50, page_size=200, timeout=FILL_TIMEOUT
    )
    async with direct_client as direct:
        print(f"filling the hub: {args.users} users, {args.servers} servers...", flush=True)
        filled = {"create users": insert_users(hub.db_url, layout.users)}
        tic = time.perf_counter()
        await start_servers(direct, layout.running, set(layout.idle))
        await wait_ready(direct, len(layout.running), len(layout.idle), timeout=FILL_TIMEOUT)
        filled["start servers"] = time.perf_counter() - tic
        filled["groups"] = await add_groups(direct, layout.users, args.groups)
        print("  " + ", ".join(f"{k} {v:.0f}s" for k, v in filled.items()), flush=True)
        stats_rows = await stats_figures(args, hub, direct, dbs)
        culled = await compare(args, hub, direct, layout, dbs, filled)
    return [
        "| | wall | hub requests | waiting for the hub | hub CPU | target |",
        "|---|---:|---:|---:|---:|---|",
        *stats_rows,
        "",
        f"Cull, one cycle stopping {args.idle:,} idle servers of {args.servers:,} "
        f"(concurrency {args.concurrency}, {args.stop_delay} s per stop):",
        "",
        *cull_bench.figures_table(culled),
        "",
        *cull_bench.verdicts(culled),
        "",
        "Where our cycle's time goes:",
        "",
        *cull_bench.breakdowns(culled),
        "",
        "Filling the hub took " + ", ".join(f"{k} {v:.0f} s" for k, v in filled.items()) + ".",
    ]


def command_line(args: argparse.Namespace) -> str:
    return (
        ".venv/bin/python -m bench.scale_bench"
        f" --users={args.users} --groups={args.groups} --servers={args.servers}"
        f" --idle={args.idle} --concurrency={args.concurrency}"
        f" --hub-db={args.hub_db} --db={args.db} --write-docs"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--servers", type=int, default=5_000, help="running servers")
    parser.add_argument("--idle", type=int, default=1_000, help="idle servers among them")
    parser.add_argument("--stop-delay", type=float, default=0.5, help="seconds a stop takes")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes of /hub/metrics")
    parser.add_argument(
        "--hub-db",
        choices=list(DATABASES),
        default="postgresql",
        help="the hub's own database (default PostgreSQL, as a hub of this size has)",
    )
    add_db_option(parser)
    add_output_options(parser, TITLE)
    args = parser.parse_args(argv)
    args.order = "ours-first"  # what cull_bench's comparison reads
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    print(f"hub in {workdir}", flush=True)
    with Databases(workdir) as dbs:
        service_db = dbs.new(chosen_databases(args)[-1], "stats-service")
        hub = Hub(
            workdir / "hub",
            services=["stats"],
            service_args={
                "stats": [f"--poll-interval={SERVICE_POLL_INTERVAL}", f"--db-url={service_db}"]
            },
            extra_config=cull_bench.hub_config(args)
            + "c.JupyterHub.authenticate_prometheus = False\n",
            db_url=dbs.new("postgresql", "hub") if args.hub_db == "postgresql" else None,
        )
        run = functools.partial(bench, args, hub, dbs)
        lines = run_on_hub(hub, workdir, run, keep=args.keep)
    intro = (
        f"JupyterHub {jupyterhub.__version__} ({DATABASES[args.hub_db]}) with LightSpawner, "
        f"{args.users:,} users in {args.groups} groups, {args.servers:,} running servers; the "
        f"stats service attached as the hub starts it (its own polls are waited for, so the "
        f"timed polls have the hub to themselves). Our services' figures on "
        + " and ".join(DATABASES[k] for k in chosen_databases(args))
        + "."
    )
    section = docs_section(TITLE, [intro, "", *lines], command_line(args))
    return publish(TITLE, "\n".join(lines), section if args.write_docs else None)


if __name__ == "__main__":
    sys.exit(main())
