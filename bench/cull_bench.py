"""One cull cycle of ours against one of jupyterhub-idle-culler 2.0.0, on the same real hub.

Fills one JupyterHub (LightSpawner: no process per server) with ``--users`` users and
``--servers`` running default servers, ``--idle`` of them idle for 4000 s and all taking
``--stop-delay`` seconds to stop. Then it runs one cycle of our culler (in-process: the
``Culler`` service opened as it opens itself, then its ``run_cycle``) and one of
``jupyterhub_idle_culler.cull_idle``,
both with ``timeout=3600``, ``concurrency=--concurrency``, default servers only, no user culling,
restoring the idle servers in between. Our cycle runs once per database of ``--db`` (its audit
trail on SQLite, on a PostgreSQL the benchmark starts, or both: the default), the hub's own
database staying SQLite. All talk to the hub through a counting reverse proxy in this process,
so wall time and hub API requests are measured the same way for each.

Run from the project root:
``.venv/bin/python -m bench.cull_bench [--db sqlite|postgresql|both] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jupyterhub
import jupyterhub_idle_culler
import psutil
from tornado import httpclient, httpserver, httputil, netutil, web

from bench.common import (
    DATABASES,
    Databases,
    add_db_option,
    add_output_options,
    chosen_databases,
    docs_section,
    machine_busy,
    percentile,
    publish,
    run_on_hub,
)
from hubservices.common.hubapi import HubAPI
from hubservices.cull.app import Culler
from tests.harness.hub import Hub

TIMEOUT = 3600  # the cullers' --timeout
IDLE_SECONDS = 4000  # how long ago the idle servers were last active
CHUNK = 500  # users per POST /users
FILL_TIMEOUT = 600  # seconds the benchmark waits for one of the hub's answers while filling it
BARE = "bare stops"  # the hub's own limit: the idle servers' DELETEs and nothing else
STOP_LOG = re.compile(r"server took ([0-9.]+) seconds to stop")
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
}

DELETE = "DELETE /users/:name/server"

log = logging.getLogger("bench.cull")


# -- the counting proxy ----------------------------------------------------------------------


def request_kind(method: str, path: str) -> str:
    """What a hub API request is for, to break the counts down."""
    rest = path.split("/hub/api", 1)[-1].strip("/")
    parts = rest.split("/") if rest else []
    if not parts:
        return f"{method} / (hub info)"
    if parts == ["users"]:
        return f"{method} /users (list page)"
    if len(parts) == 2 and parts[0] == "users":
        return f"{method} /users/:name"
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "server":
        return f"{method} /users/:name/server"
    return f"{method} other"


@dataclass
class Traffic:
    """What the proxy saw since its last reset."""

    methods: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    upstream: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[int] = field(default_factory=Counter)
    rewritten_links: int = 0

    @property
    def total(self) -> int:
        return sum(self.methods.values())


class CountingProxy:
    """A reverse proxy in front of the hub that counts requests; everything else passes as is.

    The Host header is forwarded, so the hub's ``_pagination.next.url`` links already name the
    proxy; any link that still names the hub directly is rewritten (and counted) as a safety net.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # http://127.0.0.1:<hub port>
        self.traffic = Traffic()
        self.url = ""
        self._server: httpserver.HTTPServer | None = None
        self.client: httpclient.AsyncHTTPClient | None = None

    def start(self) -> str:
        """Listen on a free 127.0.0.1 port (inside the running loop); return the base URL."""
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        app = web.Application([(r".*", _Forward, {"proxy": self})], log_function=lambda h: None)
        self._server = httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)
        # Our own client: idle-culler reconfigures the shared AsyncHTTPClient when it runs.
        self.client = httpclient.AsyncHTTPClient(force_instance=True, max_clients=64)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        return self.url

    def reset(self) -> Traffic:
        """Start counting afresh; return what was counted so far."""
        seen, self.traffic = self.traffic, Traffic()
        return seen

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self.client is not None:
            self.client.close()


class _Forward(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def initialize(self, proxy: CountingProxy) -> None:
        self.proxy = proxy

    async def _forward(self) -> None:
        proxy, req = self.proxy, self.request
        assert proxy.client is not None
        kind = request_kind(req.method or "", req.path)
        proxy.traffic.methods[req.method or ""] += 1
        proxy.traffic.kinds[kind] += 1
        headers = httputil.HTTPHeaders()
        for name, value in req.headers.get_all():
            if name.lower() not in HOP_BY_HOP:
                headers.add(name, value)
        has_body = bool(req.body) or req.method in ("POST", "PUT", "PATCH")
        upstream_req = httpclient.HTTPRequest(
            self.proxy.upstream + req.uri,
            method=req.method,
            headers=headers,
            body=req.body if has_body else None,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            decompress_response=False,
            request_timeout=300,
        )
        tic = time.perf_counter()
        resp = await proxy.client.fetch(upstream_req, raise_error=False)
        proxy.traffic.upstream[kind].append(time.perf_counter() - tic)
        if resp.code == 599:  # no answer at all from the hub
            proxy.traffic.statuses[502] += 1
            raise web.HTTPError(502, str(resp.error))
        proxy.traffic.statuses[resp.code] += 1
        self.set_status(resp.code, resp.reason)
        for name in ("Content-Type", "Server", "Date"):
            self.clear_header(name)
        for name, value in resp.headers.get_all():
            if name.lower() not in HOP_BY_HOP:
                self.add_header(name, value)
        body = resp.body or b""
        hub_netloc = proxy.upstream.encode()
        if hub_netloc in body:
            proxy.traffic.rewritten_links += body.count(hub_netloc)
            body = body.replace(hub_netloc, proxy.url.encode())
        if body and resp.code not in (204, 304):
            self.write(body)
        await self.finish()

    get = head = post = delete = patch = put = options = _forward


# -- filling the hub ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Which users exist, which have servers, which servers are idle: spread evenly."""

    users: list[str]
    running: list[str]
    idle: list[str]

    @classmethod
    def make(cls, users: int, servers: int, idle: int) -> Layout:
        if not 0 <= idle <= servers <= users:
            raise SystemExit("need 0 <= --idle <= --servers <= --users")
        names = [f"bench-{i:05d}" for i in range(users)]
        running = [names[i * users // servers] for i in range(servers)] if servers else []
        idle_names = [running[i * servers // idle] for i in range(idle)] if idle else []
        return cls(names, running, idle_names)


async def gather_limited(limit: int, jobs: list[Awaitable[Any]]) -> list[Any]:
    """Await the jobs with at most ``limit`` of them running at once."""
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Awaitable[Any]) -> Any:
        async with semaphore:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


async def start_servers(api: HubAPI, names: list[str], idle: set[str]) -> None:
    """Start the default servers of ``names``; those in ``idle`` last active 4000 s ago."""

    async def start(name: str) -> None:
        body = {"idle_seconds": IDLE_SECONDS if name in idle else 0}
        await api.post("users", name, "server", json=body)

    await gather_limited(50, [start(n) for n in names])


async def ready_servers(api: HubAPI) -> tuple[int, int]:
    """(ready servers, of which idle past the timeout), from the hub's listing."""
    now = datetime.now(UTC)
    ready = idle = 0
    for user in await api.list_users(state="ready"):
        for server in (user.get("servers") or {}).values():
            if server.get("ready"):
                ready += 1
                last = datetime.fromisoformat(server["last_activity"])
                idle += (now - last).total_seconds() >= TIMEOUT
    return ready, idle


async def wait_ready(api: HubAPI, servers: int, idle: int, timeout: float = 300) -> None:
    """Until exactly ``servers`` servers are ready, ``idle`` of them idle."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await ready_servers(api)
        if counts == (servers, idle):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected {servers} ready ({idle} idle), hub has {counts}")
        await asyncio.sleep(1)


async def fill(api: HubAPI, layout: Layout) -> dict[str, float]:
    """Create the users and start the servers; seconds each step took."""
    tic = time.perf_counter()
    for i in range(0, len(layout.users), CHUNK):
        await api.create_users(layout.users[i : i + CHUNK])
    created = time.perf_counter()
    await start_servers(api, layout.running, set(layout.idle))
    await wait_ready(api, len(layout.running), len(layout.idle))
    return {"create users": created - tic, "start servers": time.perf_counter() - created}


# -- the two cullers ---------------------------------------------------------------------------


@dataclass
class Run:
    """One culler's cycle as measured."""

    name: str
    wall: float
    traffic: Traffic
    stopped: int
    bench_cpu: float  # CPU seconds of this process (culler + proxy) during the cycle
    hub_cpu: float  # CPU seconds of the hub and its configurable-http-proxy during the cycle
    other_cpu: float  # CPU seconds of every other process on the machine meanwhile
    hub_stops: list[float]  # the hub's own "server took X seconds to stop", from its log
    phases: dict[str, list[float]] = field(default_factory=dict)


def _timed_async(samples: list[float], func: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        tic = time.perf_counter()
        try:
            return await func(*args, **kwargs)
        finally:
            samples.append(time.perf_counter() - tic)

    return timed


def _timed_sync(samples: list[float], func: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        tic = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            samples.append(time.perf_counter() - tic)

    return timed


#: Our culler's audit writes: the cycle's row; each cull's row before its stop, its outcome after.
AUDIT_WRITES = ["start_cycle", "add", "set_outcome", "finish_cycle"]


def instrument(obj: object, names: list[str], phases: dict[str, list[float]]) -> None:
    """Replace the instance's methods by timed ones; durations go to ``phases[name]``."""
    for name in names:
        func = getattr(obj, name)
        wrap = _timed_async if inspect.iscoroutinefunction(func) else _timed_sync
        setattr(obj, name, wrap(phases[name], func))


def our_culler(api_url: str, token: str, concurrency: int, db_url: str | None = None) -> Culler:
    """Our culler's app, configured as by ``--timeout --concurrency``, its audit in ``db_url``."""
    db = {"db_url": db_url} if db_url else {}
    return Culler(
        hub_api_url=api_url, api_token=token, timeout=TIMEOUT, concurrency=concurrency, **db
    )


async def run_ours(culler: Culler) -> dict[str, Any]:
    """One cycle of our culler (opened beforehand: hub client, migrated audit database), as
    its scheduled job runs it; the timed phases."""
    phases: dict[str, list[float]] = defaultdict(list)
    instrument(culler.hub, ["list_users", "get_user", "stop_server"], phases)
    instrument(culler.audit, AUDIT_WRITES, phases)
    result = await culler.run_cycle()
    if result.errors:
        raise RuntimeError(f"our cycle had {result.errors} errors")
    return {"stopped": result.culled_servers, "phases": dict(phases)}


async def run_reference(api_url: str, token: str, concurrency: int) -> dict[str, Any]:
    """One call of idle-culler's cull_idle: its first periodic run, same options as ours."""
    await jupyterhub_idle_culler.cull_idle(
        url=api_url,
        api_token=token,
        inactive_limit=TIMEOUT,
        logger=logging.getLogger("bench.reference"),
        cull_users=False,
        max_age=0,
        concurrency=concurrency,
    )
    return {"stopped": None, "phases": {}}


async def run_bare_stops(
    api_url: str, token: str, concurrency: int, names: list[str]
) -> dict[str, Any]:
    """Only the stops, ``concurrency`` at a time: what this hub allows at best, no culler."""
    phases: dict[str, list[float]] = defaultdict(list)
    culler = our_culler(api_url, token, concurrency)
    async with HubAPI(
        api_url,
        token,
        timeout=culler.hub_timeout,
        retries=culler.hub_retries,
        concurrency=concurrency,
    ) as hub:
        instrument(hub, ["stop_server"], phases)
        await asyncio.gather(*(hub.stop_server(name) for name in names))
    return {"phases": dict(phases)}


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds used so far by a process and its children (the hub and its proxy), but not
    by our services the hub started: their work is not the hub's."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            if any(arg.startswith("hubservices.") for arg in p.cmdline()):
                continue
            times = p.cpu_times()
            total += times.user + times.system
    return total


async def measure(
    name: str,
    cycle: Awaitable[dict[str, Any]],
    proxy: CountingProxy,
    direct: HubAPI,
    hub: Hub,
    idle: int,
) -> Run:
    """Run one culler's cycle with the proxy counting; check what it stopped afterwards."""
    assert hub.proc is not None
    hub_proc = psutil.Process(hub.proc.pid)
    before_ready, _ = await ready_servers(direct)
    log_offset = hub.log_path.stat().st_size
    proxy.reset()
    cpu, hub_cpu, busy = time.process_time(), tree_cpu(hub_proc), machine_busy()
    tic = time.perf_counter()
    outcome = await cycle
    wall = time.perf_counter() - tic
    cpu, hub_cpu = time.process_time() - cpu, tree_cpu(hub_proc) - hub_cpu
    other = max(0.0, machine_busy() - busy - cpu - hub_cpu)
    traffic = proxy.reset()
    with hub.log_path.open("rb") as f:
        f.seek(log_offset)
        hub_stops = [float(s) for s in STOP_LOG.findall(f.read().decode(errors="replace"))]
    after_ready, after_idle = await ready_servers(direct)
    stopped = before_ready - after_ready
    if after_idle or stopped != idle:
        raise RuntimeError(f"{name}: stopped {stopped} of {idle} idle servers, {after_idle} left")
    return Run(name, wall, traffic, stopped, cpu, hub_cpu, other, hub_stops, outcome["phases"])


async def listing_time(api_url: str, token: str, concurrency: int, repeat: int = 3) -> float:
    """Median seconds to list the ready users through the proxy, as our culler lists them."""
    times = []
    culler = our_culler(api_url, token, concurrency)
    culler.make_metrics()  # its hub client counts requests there
    async with culler.make_hub_api() as api:
        for _ in range(repeat):
            tic = time.perf_counter()
            await api.list_users(state="ready")
            times.append(time.perf_counter() - tic)
    return statistics.median(times)


# -- the benchmark -----------------------------------------------------------------------------


def ours_name(kind: str) -> str:
    """The name of our cycle with its audit in a database of ``kind``."""
    return f"ours ({DATABASES[kind]})"


@dataclass
class Result:
    """Everything the report needs."""

    args: argparse.Namespace
    fill: dict[str, float]
    listing: float
    listing_pages: int
    runs: dict[str, Run]

    @property
    def ours(self) -> list[Run]:
        """Our cycles, one per database, in ``--db`` order."""
        return [self.runs[ours_name(kind)] for kind in chosen_databases(self.args)]

    @property
    def floor(self) -> float:
        """Listing, then every stop at perfect concurrency taking the spawner's stop delay."""
        a = self.args
        return self.listing + a.idle * a.stop_delay / a.concurrency

    @property
    def stop_alone(self) -> float:
        """What one stop takes on this hub with nothing else in flight: the reference's DELETEs,
        which it sends one at a time, as the proxy saw them."""
        return statistics.mean(self.runs["reference"].traffic.upstream[DELETE])

    @property
    def floor_on_hub(self) -> float:
        """The floor with each stop taking what one takes alone on this hub."""
        a = self.args
        return self.listing + -(-a.idle // a.concurrency) * self.stop_alone


async def bench(args: argparse.Namespace, hub: Hub, dbs: Databases) -> Result:
    layout = Layout.make(args.users, args.servers, args.idle)
    # A long timeout: filling a hub of 50,000 users, a start can wait minutes for the hub, and a
    # POST that timed out is not resent (the hub may have acted on it).
    direct_client = HubAPI(
        hub.api_url, hub.admin_token, concurrency=50, page_size=200, timeout=FILL_TIMEOUT
    )
    async with direct_client as direct:
        print(f"filling the hub: {args.users} users, {args.servers} servers...", flush=True)
        filled = await fill(direct, layout)
        print("  " + ", ".join(f"{k} {v:.0f}s" for k, v in filled.items()), flush=True)
        return await compare(args, hub, direct, layout, dbs, filled)


async def compare(
    args: argparse.Namespace,
    hub: Hub,
    direct: HubAPI,
    layout: Layout,
    dbs: Databases,
    filled: dict[str, float],
) -> Result:
    """On a filled hub: the listing, then one cycle of each culler (ours once per database of
    ``args.db``, its audit trail in a fresh one from ``dbs``) and the bare stops, restoring
    the idle servers in between."""
    hub_root = hub.api_url.rsplit("/hub/api", 1)[0]
    proxy = CountingProxy(hub_root)
    api_url = proxy.start() + "/hub/api"
    cullers: dict[str, Culler] = {}
    try:
        # A token the hub generated, as a managed service gets: the harness's own token came
        # from the config, and the hub hashes those 16,384 times on every request.
        scopes = our_culler(api_url, "", args.concurrency).required_scopes()
        token = await direct.create_token("admin", scopes=scopes)
        listing = await listing_time(api_url, token, args.concurrency)
        pages = proxy.reset().kinds["GET /users (list page)"] // 3
        print(f"listing the ready users: {listing:.2f}s ({pages} pages)", flush=True)
        for kind in chosen_databases(args):
            culler = our_culler(api_url, token, args.concurrency, dbs.new(kind, "cull"))
            await culler.open()  # as the service starts: not part of the cycle measured
            cullers[ours_name(kind)] = culler
        order = [*cullers, "reference"]
        if args.order == "reference-first":
            order = ["reference", *cullers]
        order.append(BARE)
        runs: dict[str, Run] = {}
        for i, name in enumerate(order):
            if i:
                await start_servers(direct, layout.idle, set(layout.idle))
                await wait_ready(direct, len(layout.running), len(layout.idle))
                print("  restored the idle servers", flush=True)
            print(f"cycle of {name}...", flush=True)
            if name in cullers:
                cycle = run_ours(cullers[name])
            elif name == BARE:
                cycle = run_bare_stops(api_url, token, args.concurrency, layout.idle)
            else:
                cycle = run_reference(api_url, token, args.concurrency)
            runs[name] = await measure(name, cycle, proxy, direct, hub, len(layout.idle))
            print(f"  {runs[name].wall:.2f}s, {runs[name].traffic.total} requests", flush=True)
    finally:
        proxy.stop()
        for culler in cullers.values():
            await culler.close()
    return Result(args, filled, listing, pages, runs)


# -- reporting ---------------------------------------------------------------------------------


def _ms(samples: list[float]) -> str:
    if not samples:
        return "-"
    return f"{statistics.mean(samples) * 1000:.0f} ms (p95 {percentile(samples, 95) * 1000:.0f})"


def figures_table(r: Result) -> list[str]:
    """The markdown table of wall times, requests and ratios: our cycle on each database, the
    reference, then the reference's time over each of ours."""
    runs, ref = r.ours, r.runs["reference"]
    a = r.args
    reference = f"jupyterhub-idle-culler {jupyterhub_idle_culler.__version__}"
    header = [run.name for run in runs] + [reference] + [f"reference / {o.name}" for o in runs]
    rows = ["| | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]

    def row(label: str, mine: list[str], theirs: str = "", ratios: list[str] | None = None) -> None:
        padded = mine + [""] * (len(runs) - len(mine))
        cells = [*padded, theirs, *(ratios or [""] * len(runs))]
        rows.append("| " + " | ".join([label, *cells]) + " |")

    row(
        "wall time of one cycle",
        [f"{o.wall:.2f} s" for o in runs],
        f"{ref.wall:.2f} s",
        [f"**{ref.wall / o.wall:.1f}×**" for o in runs],
    )
    row(
        "hub API requests",
        [str(o.traffic.total) for o in runs],
        str(ref.traffic.total),
        [f"{ref.traffic.total / o.traffic.total:.2f}×" for o in runs],
    )
    for kind in sorted({kind for run in [*runs, ref] for kind in run.traffic.kinds}):
        mine = [str(o.traffic.kinds[kind]) for o in runs]
        row(f"&nbsp;&nbsp;`{kind}`", mine, str(ref.traffic.kinds[kind]))
    row("servers stopped", [str(o.stopped) for o in runs], str(ref.stopped))
    for label, attribute in [
        ("CPU of the bench process (culler + proxy)", "bench_cpu"),
        ("CPU of the hub (+ its configurable-http-proxy)", "hub_cpu"),
        ("CPU of other processes on the machine meanwhile", "other_cpu"),
    ]:
        mine = [f"{getattr(o, attribute):.1f} s" for o in runs]
        row(label, mine, f"{getattr(ref, attribute):.1f} s")
    row(
        f"floor: listing {r.listing:.2f} s + {a.idle} × {a.stop_delay} s / {a.concurrency}",
        [f"{r.floor:.2f} s"],
    )
    row("ours / floor", [f"**{o.wall / r.floor:.2f}×**" for o in runs])
    row(
        f"floor on this hub: listing + {-(-a.idle // a.concurrency)} waves × one stop alone "
        f"({r.stop_alone * 1000:.0f} ms, the reference's DELETEs)",
        [f"{r.floor_on_hub:.2f} s"],
    )
    row("ours / floor on this hub", [f"{o.wall / r.floor_on_hub:.2f}×" for o in runs])
    if BARE in r.runs:
        bare = r.runs[BARE].wall
        row(
            f"bare stops: only the {a.idle} DELETEs, {a.concurrency} at a time, no culler",
            [f"{bare:.2f} s"],
        )
        row("ours / (listing + bare stops)", [f"{o.wall / (r.listing + bare):.2f}×" for o in runs])
    return rows


def breakdown(r: Result, ours: Run, kind: str) -> list[str]:
    """Where one of our cycles' time goes, from the timed methods and the proxy."""
    p = ours.phases
    listing = sum(p.get("list_users", []))
    audit_calls = [seconds for name in AUDIT_WRITES for seconds in p.get(name, [])]
    bookkeeping = sum(p.get("start_cycle", []) + p.get("finish_cycle", []))
    stop_phase = ours.wall - listing - bookkeeping
    deletes = p.get("stop_server", [])
    waves = -(-ours.stopped // r.args.concurrency)
    page_size = Culler.api_page_size.default_value
    up = ours.traffic.upstream
    return [
        f"- listing ({ours.traffic.kinds['GET /users (list page)']} pages of up to {page_size} "
        f"users, one after another): {listing:.2f} s",
        f"- stopping {ours.stopped} servers, {r.args.concurrency} at a time: {stop_phase:.2f} s "
        f"(ideal {ours.stopped * r.args.stop_delay / r.args.concurrency:.2f} s)",
        f"- a stop slot holds the cull's audit row ({_ms(p.get('add', []))}, written before the "
        f"stop is sent) and the `DELETE /users/:name/server`: {_ms(deletes)}, "
        f"× {waves} waves = {statistics.mean(deletes) * waves if deletes else 0:.2f} s; the "
        f"re-check `GET /users/:name` ({_ms(p.get('get_user', []))}) of the next servers "
        f"overlaps the stops in flight",
        f"- audit database ({DATABASES[kind]}, each write in a thread, off the event loop; a row "
        f"before each stop, its outcome after): {len(audit_calls)} transactions, "
        f"{sum(audit_calls):.2f} s in all",
        f"- hub-side latency seen by the proxy: re-check GET "
        f"{_ms(up.get('GET /users/:name', []))}, DELETE "
        f"{_ms(up.get(DELETE, []))}, list page "
        f"{_ms(up.get('GET /users (list page)', []))}; inside the hub, proxy route removal "
        f"+ stop (the hub's log): {_ms(ours.hub_stops)} (reference, one at a time: "
        f"{_ms(r.runs['reference'].hub_stops)})",
    ]


def breakdowns(r: Result) -> list[str]:
    """The breakdown of each of our cycles under its name, then the bare stops'."""
    lines = []
    for kind, ours in zip(chosen_databases(r.args), r.ours, strict=True):
        lines += [f"{ours.name}:", "", *breakdown(r, ours, kind), ""]
    if BARE in r.runs:
        bare = r.runs[BARE]
        lines.append(
            f"Bare stops, {r.args.concurrency} at a time with nothing else: DELETE "
            f"{_ms(bare.traffic.upstream.get(DELETE, []))} as the proxy sees it, "
            f"{_ms(bare.hub_stops)} inside the hub."
        )
    return lines


def verdicts(r: Result) -> list[str]:
    lines = []
    ref = r.runs["reference"]
    for ours in r.ours:
        speedup, vs_floor = ref.wall / ours.wall, ours.wall / r.floor
        lines += [
            f"- {ours.name}, ≥ 5× faster than the reference: "
            f"{'met' if speedup >= 5 else 'MISSED'} ({speedup:.1f}×)",
            f"- {ours.name}, within 1.3× of the floor: "
            f"{'met' if vs_floor <= 1.3 else 'MISSED'} ({vs_floor:.2f}×)"
            + (_hub_limit(r, ours) if BARE in r.runs and vs_floor > 1.3 else ""),
        ]
    return lines


def _hub_limit(r: Result, ours: Run) -> str:
    """Why the floor was missed, when the hub alone cannot reach it either."""
    bare = r.runs[BARE]
    concurrent = statistics.mean(bare.traffic.upstream[DELETE])
    return (
        f". The hub alone, sent the same {r.args.idle} stops {r.args.concurrency} at a time with "
        f"no culler, took {(r.listing + bare.wall) / r.floor:.2f}× the floor (with the listing): "
        f"a stop it answers in {r.stop_alone * 1000:.0f} ms alone takes {concurrent * 1000:.0f} "
        f"ms with {r.args.concurrency} in flight: the hub does each stop's proxy and database work "
        f"on its one event loop. "
        f"Our cycle took {ours.wall / (r.listing + bare.wall):.2f}× that."
    )


def command_line(args: argparse.Namespace) -> str:
    return (
        ".venv/bin/python -m bench.cull_bench"
        f" --users={args.users} --servers={args.servers} --idle={args.idle}"
        f" --stop-delay={args.stop_delay} --concurrency={args.concurrency}"
        + (f" --order={args.order}" if args.order != "ours-first" else "")
        + (f" --db={args.db}" if args.db != "both" else "")
        + " --write-docs"
    )


def shared_note(r: Result) -> str:
    """A warning when other processes took CPU while the cullers ran (a shared machine)."""
    runs = [*r.ours, r.runs["reference"]]
    loads = [run.other_cpu / run.wall for run in runs]
    if max(loads) < 0.1:
        return ""
    during = ", ".join(
        f"{load:.1f} during {run.name}" for run, load in zip(runs, loads, strict=True)
    )
    return (
        f" The machine was shared: other processes kept cores busy on average ({during}, of "
        f"its {os.cpu_count()}), so the hub-bound figures are pessimistic and vary from run "
        f"to run."
    )


def cull_section(r: Result) -> str:
    a = r.args
    names = " and ".join(o.name for o in r.ours)
    first = f"{names} first, then the reference" if a.order == "ours-first" else "reference first"
    audit = " and ".join(DATABASES[kind] for kind in chosen_databases(a))
    body = [
        f"One cull cycle of our culler and one of jupyterhub-idle-culler "
        f"{jupyterhub_idle_culler.__version__} against the same hub: JupyterHub "
        f"{jupyterhub.__version__} (SQLite) with `tests.harness.lightspawner.LightSpawner`, "
        f"{a.users:,} users, {a.servers:,} running default servers of which {a.idle} idle for "
        f"{IDLE_SECONDS} s, every stop taking {a.stop_delay} s. Both cullers run in the bench "
        f"process with `--timeout={TIMEOUT} --concurrency={a.concurrency}`, default servers "
        f"only, no user culling; ours once with its audit trail on each database ({audit}, a "
        f"fresh one each, PostgreSQL a private server the bench starts); {first}, the idle "
        f"servers restarted in between. Last, the "
        f"same {a.idle} stops are sent alone ('bare stops': {a.concurrency} DELETEs at a time, "
        f"no listing, no re-check) to show what this hub allows at best. All reach the hub "
        f"through a counting reverse proxy (in the bench process) that forwards everything "
        f"unchanged, the Host header included, so the hub's `_pagination.next.url` links already "
        f"point at the proxy and the reference's page requests are counted "
        f"({r.runs['reference'].traffic.rewritten_links} links needed rewriting).",
        "",
        *figures_table(r),
        "",
        "Targets:",
        "",
        *verdicts(r),
        "",
        "Where our cycle's time goes (timed around our HubAPI and Audit methods):",
        "",
        *breakdowns(r),
        "",
        f"The floor is the median of 3 listings of the ready users through the same proxy "
        f"({r.listing_pages} pages) plus the stops at perfect concurrency. Filling the hub took "
        + ", ".join(f"{k} {v:.0f} s" for k, v in r.fill.items())
        + " (not part of any figure).",
        "",
        "Command (from the project root; a few minutes, most of them filling the hub; "
        "`--db=sqlite` or `--db=postgresql` runs our cycle on one database only):",
    ]
    return docs_section("Cull", body, command_line(a), shared_note(r))


def report(r: Result) -> str:
    return "\n".join(
        [
            "",
            *figures_table(r),
            "",
            *verdicts(r),
            "",
            *breakdowns(r),
            "",
            f"order: {r.args.order}; command: {command_line(r.args)}",
        ]
    )


# -- main ----------------------------------------------------------------------------------


def hub_config(args: argparse.Namespace) -> str:
    return f"""
c.JupyterHub.spawner_class = "tests.harness.lightspawner.LightSpawner"
c.LightSpawner.stop_delay = {args.stop_delay!r}
c.JupyterHub.concurrent_spawn_limit = 0
# The hub's proxy-activity sweep (every 5 min) would mark the idle servers active at their
# route's creation once filling the hub takes longer than that (5,000 servers: 8 minutes).
c.JupyterHub.last_activity_interval = 0
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--servers", type=int, default=1000, help="running servers")
    parser.add_argument("--idle", type=int, default=200, help="idle servers among them")
    parser.add_argument("--stop-delay", type=float, default=0.5, help="seconds a stop takes")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--order", choices=["ours-first", "reference-first"], default="ours-first")
    add_db_option(parser)
    add_output_options(parser, "Cull")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cull-bench-"))
    hub = Hub(workdir / "hub", services=[], extra_config=hub_config(args))
    print(f"hub in {workdir}", flush=True)
    with Databases(workdir) as dbs:
        run = functools.partial(bench, args, hub, dbs)
        result = run_on_hub(hub, workdir, run, keep=args.keep)
    return publish("Cull", report(result), cull_section(result) if args.write_docs else None)


if __name__ == "__main__":
    sys.exit(main())
