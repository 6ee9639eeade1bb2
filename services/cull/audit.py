"""Writing and reading the audit trail; the only place the culler touches its database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from ..common.db import Database
from ..common.timeutil import as_utc, parse_time, utcnow
from .models import Cull, CullExtension, CullWarning, Cycle
from .policy import Verdict

if TYPE_CHECKING:
    from .cycle import Outcome  # the cycle writes through this module

log = logging.getLogger(__name__)

#: Backoff between attempts at an audit write the database refused (locked, full, gone).
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0

P = ParamSpec("P")
T = TypeVar("T")


async def written(write: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run an audit write in a thread, retrying with backoff until it lands.

    A database that is locked (SQLite gives up after its busy timeout), full or restarting
    refuses with ``OperationalError``; the write is retried, so a cull is delayed rather than
    left out of the trail. Other errors (a bug, a constraint) are raised: retrying cannot help.
    """
    delay = RETRY_FIRST_SECONDS
    attempt = 0
    while True:
        try:
            return await asyncio.to_thread(write, *args, **kwargs)
        except OperationalError as e:
            attempt += 1
            log.warning(
                "Audit write %s failed (%s); retry %d in %.1fs",
                getattr(write, "__name__", "?"),
                str(e.orig).splitlines()[0] if e.orig else type(e).__name__,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)


@dataclass(frozen=True)
class CullEntry:
    """One cull; ``model`` is the server's (or user's) model the verdict was made on."""

    cycle_id: int
    kind: str  # "server" or "user"
    user: str
    server: str | None
    verdict: Verdict
    model: Mapping[str, Any]
    outcome: Outcome
    at: datetime = field(default_factory=utcnow)


class Audit:
    """The culler's record of cycles, culls and warnings.

    Its columns are timezone-aware (migration 0001, read by stats too), so the naive UTC times
    the culler works with are written through :func:`as_utc`.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def start_cycle(self, dry_run: bool, at: datetime) -> int:
        with self.db.session() as session:
            cycle = Cycle(started_at=as_utc(at), dry_run=dry_run)
            session.add(cycle)
            session.flush()
            return cycle.id

    def finish_cycle(
        self, cycle_id: int, at: datetime, error: str | None = None, **counts: int
    ) -> None:
        with self.db.session() as session:
            cycle = session.get_one(Cycle, cycle_id)
            cycle.finished_at = as_utc(at)
            cycle.error = error
            for name, value in counts.items():
                setattr(cycle, name, value)

    def add(self, cull: CullEntry) -> int:
        """Write one cull; its row id, to set its outcome once the hub has answered."""
        with self.db.session() as session:
            row = _row(cull)
            session.add(row)
            session.flush()
            return row.id

    def set_outcome(self, cull_id: int, outcome: Outcome) -> None:
        with self.db.session() as session:
            session.execute(update(Cull).where(Cull.id == cull_id).values(outcome=outcome.value))

    def warn_once(self, user: str, server: str, started: datetime, due: datetime) -> bool:
        """Note a warning for this server run and due time; False if it was already warned.

        A server whose due time moved later since its warning (it was used, or kept running
        from the culler's page) is warned again before the new due time.
        """
        started, due = as_utc(started), as_utc(due)
        with self.db.session() as session:
            warned = session.scalar(
                select(CullWarning).where(
                    CullWarning.user == user,
                    CullWarning.server == server,
                    CullWarning.started == started,
                )
            )
            if warned is None:
                warned = CullWarning(user=user, server=server, started=started, due=due)
                session.add(warned)
            elif as_utc(warned.due) >= due:
                return False
            warned.due = due
            warned.warned_at = as_utc(utcnow())
            return True

    def extensions_used(self, user: str, server: str, started: datetime) -> int:
        """How many times this server run was kept running by its owner."""
        with self.db.session() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(CullExtension)
                    .where(
                        CullExtension.user == user,
                        CullExtension.server == server,
                        CullExtension.started == as_utc(started),
                    )
                )
                or 0
            )

    def add_extension(self, user: str, server: str, started: datetime) -> None:
        with self.db.session() as session:
            session.add(
                CullExtension(
                    user=user, server=server, started=as_utc(started), at=as_utc(utcnow())
                )
            )

    def recent_cycles(self, limit: int) -> list[Cycle]:
        with self.db.session() as session:
            return list(session.scalars(select(Cycle).order_by(Cycle.id.desc()).limit(limit)))

    def recent_culls(self, limit: int, user: str | None = None) -> list[Cull]:
        query = select(Cull).order_by(Cull.id.desc()).limit(limit)
        if user is not None:
            query = query.where(Cull.user == user)
        with self.db.session() as session:
            return list(session.scalars(query))


def _row(cull: CullEntry) -> Cull:
    born = cull.model.get("started") if cull.kind == "server" else cull.model.get("created")
    return Cull(
        cycle_id=cull.cycle_id,
        at=as_utc(cull.at),
        kind=cull.kind,
        user=cull.user,
        server=cull.server,
        reason=cull.verdict.reason or "",
        why=cull.verdict.why,
        rule=cull.verdict.rule,
        idle_seconds=_seconds(cull.verdict.idle),
        age_seconds=_seconds(cull.verdict.age),
        last_activity=as_utc(parse_time(cull.model.get("last_activity"))),
        started=as_utc(parse_time(born)),
        outcome=cull.outcome.value,
    )


def _seconds(delta: Any) -> int | None:
    return None if delta is None else int(delta.total_seconds())
