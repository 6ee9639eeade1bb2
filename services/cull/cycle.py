"""One cull cycle: list everything, decide, then re-check and stop servers concurrently.

The decisions are :mod:`hubservices.cull.policy`'s; this module only talks to the hub, the
servers (busy kernels), the warning hook and the audit trail, in that order of a cycle:

1. list every user with a ready server (and, with ``cull_users``, every inactive user) before
   acting, so stops and deletions never shift the pages being read;
2. warn the owners of servers due within ``warn_before``;
3. for each server to cull: fetch it again and skip it if it became active, pending or was
   restarted; keep it if a kernel is busy; stop it. At most ``concurrency`` stops are in flight;
   the next ``concurrency`` servers are re-checked meanwhile, so a stop slot never waits for a
   re-check and a re-check is never more than one stop old when its stop is sent;
4. remove users whose servers are all stopped, only once their stops have finished (at most
   ``concurrency`` removals in flight).

Audit rows are queued and written in batches on a thread of their own, and every other audit
call runs in a thread too, so the database never holds up the event loop or the hub's answers
(SQLite commits take milliseconds each; a cycle may make hundreds).

One server's or user's failure is counted and logged and never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..common.hubapi import HubAPI, HubAPIError
from ..common.process import child_env
from ..common.timeutil import as_utc, parse_time, utcnow
from .audit import Audit, CullEntry
from .policy import (
    Judged,
    Policy,
    Verdict,
    judge_all,
    judge_server,
    judge_user,
    keep_for_busy_kernel,
)

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What became of a server or user the cycle culled; the audit's ``outcome`` column."""

    STOPPED = "stopped"
    STOPPING = "stopping"  # the hub answered 202 and the stop had not finished when we left it
    REMOVED = "removed"  # a named server stopped and deleted (remove_named_servers)
    DELETED = "deleted"  # a user removed from the hub
    DRY_RUN = "dry-run"  # what would have been culled


@dataclass(frozen=True)
class CullOptions:
    """How the culler acts on its decisions (what it decides is the Policy)."""

    concurrency: int = 10
    remove_named_servers: bool = False
    dry_run: bool = False
    busy_kernels: bool = False
    busy_kernel_cap: int = 86400
    server_url: str = ""  # where single-user servers answer (the proxy), for busy kernels
    stop_timeout: float = 300.0  # how long to wait for a slow (202) stop before a user removal
    warn_before: int = 0
    warn_command: Sequence[str] = ()
    warn_url: str = ""


class CullMetrics:
    """The culler's Prometheus series, in the service's registry."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "hubservices_cull") -> None:
        self.servers_culled = Counter(
            f"{prefix}_servers_culled",
            "Servers stopped by the culler",
            ["reason"],
            registry=registry,
        )
        self.users_culled = Counter(
            f"{prefix}_users_culled", "Users removed by the culler", ["reason"], registry=registry
        )
        self.kept_busy = Counter(
            f"{prefix}_servers_kept_busy", "Idle servers kept for a busy kernel", registry=registry
        )
        self.errors = Counter(
            f"{prefix}_errors", "Failures, by the step that failed", ["step"], registry=registry
        )
        self.cycle_duration = Histogram(
            f"{prefix}_cycle_duration_seconds",
            "Duration of a cull cycle",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=registry,
        )
        self.examined = Gauge(
            f"{prefix}_servers_examined",
            "Running servers the last cycle looked at",
            registry=registry,
        )
        self.due = Gauge(
            f"{prefix}_servers_due",
            "Servers the last cycle found due for culling",
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{prefix}_stops_in_flight", "Server stops waiting for the hub now", registry=registry
        )
        self.last_success = Gauge(
            f"{prefix}_last_success_timestamp_seconds",
            "When a cycle last finished without a cycle-level error",
            registry=registry,
        )


@dataclass
class CycleResult:
    """What a cycle did; also what the status page shows as upcoming."""

    examined: int = 0
    culled_servers: int = 0
    culled_users: int = 0
    kept_busy: int = 0
    errors: int = 0
    #: kept servers with a due time, soonest first
    upcoming: list[tuple[datetime, Judged]] = field(default_factory=list)


@dataclass
class LastCycle:
    """The latest finished cycle's result, for the status page (None before the first)."""

    result: CycleResult | None = None

    def upcoming(self, until: datetime) -> list[tuple[datetime, Judged]]:
        """Servers the last cycle kept that are due by ``until``, soonest first."""
        kept = self.result.upcoming if self.result else []
        return [(due, judged) for due, judged in kept if due <= until]


class CullCycle:
    """One pass of the culler over the hub."""

    def __init__(
        self,
        hub: HubAPI,
        policy: Policy,
        options: CullOptions,
        audit: Audit,
        metrics: CullMetrics,
        *,
        token: str,
    ) -> None:
        """``token`` is the service's, for asking servers about their kernels."""
        self.hub = hub
        self._token = token
        self.policy = policy
        self.options = options
        self.audit = audit
        self.metrics = metrics
        self.result = CycleResult()
        self._changes = asyncio.Semaphore(options.concurrency)  # stops, removals in flight
        self._in_hand = asyncio.Semaphore(2 * options.concurrency)  # re-checked or stopping
        self._unwritten: list[CullEntry] = []  # audit rows queued for the writer
        self._writer: asyncio.Task[None] | None = None

    async def run(self) -> CycleResult:
        start = time.monotonic()
        now = utcnow()
        cycle_id = await asyncio.to_thread(self.audit.start_cycle, self.options.dry_run, now)
        error = None
        try:
            await self._run(cycle_id, now)
        except HubAPIError as e:
            error = str(e)
            self.metrics.errors.labels("list").inc()
            raise
        finally:
            if self._writer:
                await self._writer
            await asyncio.to_thread(
                self.audit.finish_cycle,
                cycle_id,
                utcnow(),
                error,
                examined=self.result.examined,
                culled_servers=self.result.culled_servers,
                culled_users=self.result.culled_users,
                kept_busy=self.result.kept_busy,
                errors=self.result.errors,
            )
            self.metrics.cycle_duration.observe(time.monotonic() - start)
        self.metrics.last_success.set_to_current_time()
        return self.result

    async def _run(self, cycle_id: int, now: datetime) -> None:
        ready = await self.hub.list_users(state="ready")
        inactive = await self.hub.list_users(state="inactive") if self.policy.cull_users else []
        if any(r.groups for r in self.policy.rules) and any("groups" not in u for u in ready):
            self.metrics.errors.labels("list").inc()
            log.error("Policies match groups, but the hub gives no groups: add read:users:groups")
        judged = judge_all(ready, self.policy, now)
        due = [j for j in judged if j.verdict.cull]
        kept = [(j.verdict.due, j) for j in judged if not j.verdict.cull and j.verdict.due]
        kept.sort(key=lambda due_judged: due_judged[0])
        self.result.examined = len(judged)
        self.result.upcoming = kept
        self.metrics.examined.set(len(judged))
        self.metrics.due.set(len(due))
        log.info(
            "Cycle %d: %d running servers, %d due%s",
            cycle_id,
            len(judged),
            len(due),
            " (dry run: stopping nothing)" if self.options.dry_run else "",
        )
        if self.options.warn_before:
            await self._warn(kept, now)

        outcomes = await asyncio.gather(*(self._cull_server(cycle_id, j) for j in due))
        if not self.policy.cull_users:
            return
        stopped_all = _users_with_every_server_gone(ready, due, outcomes)
        names = [u["name"] for u in inactive if not u.get("servers")] + stopped_all
        await asyncio.gather(*(self._cull_user(cycle_id, name) for name in names))

    async def _cull_server(self, cycle_id: int, judged: Judged) -> Outcome | None:
        """Stop one server if it is still due; the outcome, or None if it was kept."""
        name, server_name = judged.user["name"], judged.server_name
        try:
            async with self._in_hand:
                recheck = await self._recheck(judged)
                if recheck is None:
                    return None
                fresh, verdict = recheck
                if self.options.busy_kernels and await self._keep_busy(judged, verdict):
                    return None
                if self.options.dry_run:
                    log.info("Would cull %s: %s", judged.label, verdict.why)
                    outcome = Outcome.DRY_RUN
                else:
                    log.info("Culling %s: %s", judged.label, verdict.why)
                    async with self._changes:
                        outcome = await self._stop(name, server_name)
        except HubAPIError as e:
            self.result.errors += 1
            self.metrics.errors.labels("stop").inc()
            log.error("Could not cull %s: %s", judged.label, e)
            return None
        self._record(CullEntry(cycle_id, "server", name, server_name, verdict, fresh, outcome))
        if outcome != Outcome.DRY_RUN:
            self.result.culled_servers += 1
            self.metrics.servers_culled.labels(verdict.reason).inc()
        if outcome == Outcome.STOPPING and self.policy.cull_users:
            outcome = await self._wait_stopped(name, server_name)
        return outcome

    async def _recheck(self, judged: Judged) -> tuple[dict[str, Any], Verdict] | None:
        """The server's fresh model and verdict if it is still due; None (logged why) if not."""
        fresh_user = await self.hub.get_user(judged.user["name"])
        fresh = (fresh_user.get("servers") or {}).get(judged.server_name)
        if fresh is None:
            log.info("Not culling %s: already stopped", judged.label)
            return None
        if fresh.get("started") != judged.server.get("started"):
            log.info("Not culling %s: restarted since the listing", judged.label)
            return None
        verdict = judge_server(fresh_user, judged.server_name, fresh, self.policy, utcnow())
        if not verdict.cull:
            log.info("Not culling %s: %s since the listing", judged.label, verdict.why)
            return None
        return fresh, verdict

    def _record(self, cull: CullEntry) -> None:
        """Queue an audit row. One writer thread takes what is queued, in one transaction, so
        the database never holds up the hub's answers (SQLite commits take milliseconds)."""
        self._unwritten.append(cull)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_audit())

    async def _write_audit(self) -> None:
        while self._unwritten:
            culls, self._unwritten = self._unwritten, []
            await asyncio.to_thread(self.audit.record, culls)

    async def _stop(self, user: str, server_name: str) -> Outcome:
        remove = self.options.remove_named_servers and server_name != ""
        self.metrics.in_flight.inc()
        try:
            status = await self.hub.stop_server(user, server_name, remove=remove)
        finally:
            self.metrics.in_flight.dec()
        if status == 202:
            log.warning("Server %s/%s is slow to stop", user, server_name)
            return Outcome.STOPPING
        return Outcome.REMOVED if remove else Outcome.STOPPED

    async def _wait_stopped(self, user: str, server_name: str) -> Outcome:
        """Poll a slow stop until it finishes: a user is removed only once it has."""
        deadline = time.monotonic() + self.options.stop_timeout
        delay = 0.5
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            servers = (await self.hub.get_user(user)).get("servers") or {}
            if server_name not in servers:
                return Outcome.STOPPED
            delay = min(delay * 2, 10)
        log.warning(
            "Server %s/%s still stopping after %ss", user, server_name, self.options.stop_timeout
        )
        return Outcome.STOPPING

    async def _cull_user(self, cycle_id: int, name: str) -> None:
        """Remove a user with no servers if the policy says so, judged on a fresh model."""
        try:
            user = await self.hub.get_user(name)
            if self.options.dry_run:
                # its servers would have been stopped by now
                user = {**user, "servers": {}}
            verdict = judge_user(user, self.policy, utcnow())
            if not verdict.cull:
                return
            if self.options.dry_run:
                log.info("Would remove user %s: %s", name, verdict.why)
                outcome = Outcome.DRY_RUN
            else:
                log.info("Removing user %s: %s", name, verdict.why)
                async with self._changes:
                    await self.hub.delete_user(name)
                outcome = Outcome.DELETED
                self.result.culled_users += 1
                self.metrics.users_culled.labels(verdict.reason).inc()
        except HubAPIError as e:
            self.result.errors += 1
            self.metrics.errors.labels("user").inc()
            log.error("Could not cull user %s: %s", name, e)
            return
        self._record(CullEntry(cycle_id, "user", name, None, verdict, user, outcome))

    async def _keep_busy(self, judged: Judged, verdict: Verdict) -> bool:
        """Ask the server, without counting as activity, whether a kernel is busy."""
        url = (
            judged.server.get("full_url")
            or self.options.server_url.rstrip("/") + judged.server["url"]
        )
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.get(
                    f"{url}api/kernels",
                    params={"no_track_activity": "1"},
                    headers={"Authorization": f"token {self._token}"},
                )
                r.raise_for_status()
                busy = any(k.get("execution_state") == "busy" for k in r.json())
        except (httpx.HTTPError, ValueError) as e:
            self.metrics.errors.labels("kernels").inc()
            log.warning("Could not ask %s about its kernels (%s); culling as idle", judged.label, e)
            return False
        if keep_for_busy_kernel(verdict, busy, self.options.busy_kernel_cap):
            log.info("Keeping %s: a kernel is busy (%s)", judged.label, verdict.why)
            self.result.kept_busy += 1
            self.metrics.kept_busy.inc()
            return True
        return False

    async def _warn(self, kept: list[tuple[datetime, Judged]], now: datetime) -> None:
        """Tell the owners of servers due within ``warn_before`` seconds, once per server run."""
        for due, j in kept:
            if (due - now).total_seconds() > self.options.warn_before:
                continue
            started = parse_time(j.server.get("started"))
            if started is None:  # judged servers without a start time have no due time
                continue
            first = await asyncio.to_thread(
                self.audit.warn_once, j.user["name"], j.server_name, started, due
            )
            if not first:
                continue
            notice = {
                "user": j.user["name"],
                "server": j.server_name,
                "due": as_utc(due).isoformat(),
                "why": j.verdict.why,
            }
            try:
                await send_warning(self.options, notice)
            except (TimeoutError, OSError, httpx.HTTPError) as e:
                self.metrics.errors.labels("warn").inc()
                log.warning("Could not warn %s: %s", j.label, e)


def _users_with_every_server_gone(
    ready: Sequence[Mapping[str, Any]], due: list[Judged], outcomes: list[Outcome | None]
) -> list[str]:
    """Users all of whose servers this cycle stopped (and whose stops have finished)."""
    stopped: dict[str, set[str]] = {}
    for judged, outcome in zip(due, outcomes, strict=True):
        if outcome in (Outcome.STOPPED, Outcome.REMOVED, Outcome.DRY_RUN):
            stopped.setdefault(judged.user["name"], set()).add(judged.server_name)
    return [
        u["name"] for u in ready if u["name"] in stopped and set(u["servers"]) <= stopped[u["name"]]
    ]


async def send_warning(options: CullOptions, notice: Mapping[str, str]) -> None:
    """Run the warning command and/or POST to the warning URL with the notice."""
    if options.warn_command:
        env = child_env(os.environ, {f"CULL_{key.upper()}": value for key, value in notice.items()})
        proc = await asyncio.create_subprocess_exec(*options.warn_command, env=env)
        try:
            code = await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            raise
        if code:
            raise OSError(f"warning command exited {code}")
    if options.warn_url:
        async with httpx.AsyncClient(timeout=10) as client:
            (await client.post(options.warn_url, json=notice)).raise_for_status()
