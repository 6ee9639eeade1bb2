"""Should this server (or user) go, and why: a function of the hub's model, the policy, the time.

Nothing here talks to the hub, so every rule is tested without one. Times are naive UTC
(:mod:`hubservices.common.timeutil`), ``now`` included. The hub's models are the
dicts ``GET /users`` returns (``servers`` keyed by server name, ``""`` for the default server).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from ..common.timeutil import parse_time

IDLE = "idle"
MAX_AGE = "max-age"
_RULE_KEYS = {"name", "groups", "users", "servers", "user_options", "timeout", "max_age", "never"}


def format_duration(delta: timedelta | None) -> str:
    """``2h05m``, ``3m20s``: short enough for a log line and a table cell."""
    if delta is None:
        return "?"
    if abs(delta.total_seconds()) < 10:
        return f"{delta.total_seconds():.1f}s"
    seconds = int(delta.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02}h"
    if hours:
        return f"{sign}{hours}h{minutes:02}m"
    return f"{sign}{minutes}m{secs:02}s" if minutes else f"{sign}{secs}s"


@dataclass(frozen=True)
class Rule:
    """A policy rule: which servers it matches, and how they are culled instead of the default.

    A rule with several criteria matches only when all hold; a criterion lists alternatives
    (``groups=["staff", "ta"]`` matches a member of either). ``users`` and ``servers`` take
    shell patterns (``"guest-*"``). ``user_options`` matches when the server was started with
    at least these options (the spawner's profile form). ``timeout``/``max_age`` of ``None``
    keep the global value; ``0`` switches that limit off; ``never`` protects the server.
    """

    name: str
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    servers: frozenset[str] = frozenset()
    user_options: Mapping[str, Any] = field(default_factory=dict)
    timeout: int | None = None
    max_age: int | None = None
    never: bool = False

    @classmethod
    def from_config(cls, index: int, config: Mapping[str, Any]) -> Rule:
        """A rule from its config dict; ``ValueError`` naming the rule and the bad key."""
        if not isinstance(config, Mapping):
            raise ValueError(f"policy #{index + 1} must be a dict, not {config!r}")
        label = f"policy #{index + 1}" + (f" {config['name']!r}" if config.get("name") else "")
        unknown = set(config) - _RULE_KEYS
        if unknown:
            raise ValueError(
                f"{label}: unknown key {sorted(unknown)[0]!r}; use {sorted(_RULE_KEYS)}"
            )
        for key in ("timeout", "max_age"):
            value = config.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{label}: {key} must be seconds >= 0, not {value!r}")
        names = {}
        for key in ("groups", "users", "servers"):
            value = config.get(key, [])
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{label}: {key} must be a list of names, not {value!r}")
            names[key] = frozenset(value)
        options = config.get("user_options", {})
        if not isinstance(options, Mapping):
            raise ValueError(f"{label}: user_options must be a dict, not {options!r}")
        if not isinstance(config.get("never", False), bool):
            raise ValueError(f"{label}: never must be true or false")
        return cls(
            name=str(config.get("name") or f"policy #{index + 1}"),
            user_options=dict(options),
            timeout=config.get("timeout"),
            max_age=config.get("max_age"),
            never=config.get("never", False),
            **names,
        )

    def matches(
        self, user: Mapping[str, Any], server_name: str | None, server: Mapping[str, Any] | None
    ) -> bool:
        """Whether this rule covers the server (or, with ``server_name=None``, the user)."""
        if self.groups and not self.groups.intersection(user.get("groups") or ()):
            return False
        if self.users and not any(fnmatchcase(user["name"], p) for p in self.users):
            return False
        if server_name is None:
            # a user with no server: rules about particular servers do not describe it
            return not (self.servers or self.user_options)
        if self.servers and not any(fnmatchcase(server_name, p) for p in self.servers):
            return False
        options = (server or {}).get("user_options") or {}
        return all(options.get(k) == v for k, v in self.user_options.items())


@dataclass(frozen=True)
class Policy:
    """The culler's whole decision input besides the hub's models and the time."""

    timeout: int = 600
    max_age: int = 0
    cull_users: bool = False
    cull_admin_users: bool = True
    cull_default_servers: bool = True
    cull_named_servers: bool = True
    rules: tuple[Rule, ...] = ()

    def rule_for(
        self, user: Mapping[str, Any], server_name: str | None, server: Mapping[str, Any] | None
    ) -> Rule | None:
        """The first rule that matches, if any."""
        return next((r for r in self.rules if r.matches(user, server_name, server)), None)

    def limits(self, rule: Rule | None) -> tuple[int, int]:
        """(timeout, max_age) in seconds after the rule's overrides; 0 means off."""
        if rule is None:
            return self.timeout, self.max_age
        return (
            self.timeout if rule.timeout is None else rule.timeout,
            self.max_age if rule.max_age is None else rule.max_age,
        )


@dataclass(frozen=True)
class Verdict:
    """The decision on one server or user, with what a person needs to trust it."""

    cull: bool
    reason: str | None  # IDLE or MAX_AGE when cull is True
    why: str  # one human sentence: "idle 2h05m (timeout 1h00m)", "kept: spawn pending"
    idle: timedelta | None = None
    age: timedelta | None = None
    rule: str | None = None
    due: datetime | None = None  # when it will be culled if nothing changes; None: never

    @classmethod
    def keep(cls, why: str, **details: Any) -> Verdict:
        return cls(cull=False, reason=None, why=why, **details)


def _decide(
    last_activity: datetime,
    born: datetime,
    timeout: int,
    max_age: int,
    now: datetime,
    rule: Rule | None,
    *,
    born_word: str,
) -> Verdict:
    """Idle past the timeout, or older than max-age; else when that will be."""
    idle, age = now - last_activity, now - born
    details: dict[str, Any] = {"idle": idle, "age": age, "rule": rule.name if rule else None}
    via = f", rule {rule.name}" if rule else ""
    if timeout and idle.total_seconds() >= timeout:
        limit = format_duration(timedelta(seconds=timeout))
        why = f"idle {format_duration(idle)} (timeout {limit}{via})"
        return Verdict(cull=True, reason=IDLE, why=why, **details)
    if max_age and age.total_seconds() >= max_age:
        limit = format_duration(timedelta(seconds=max_age))
        why = f"{born_word} {format_duration(age)} ago (max-age {limit}{via})"
        return Verdict(cull=True, reason=MAX_AGE, why=why, **details)
    dues = []
    if timeout:
        dues.append(last_activity + timedelta(seconds=timeout))
    if max_age:
        dues.append(born + timedelta(seconds=max_age))
    why = f"active {format_duration(idle)} ago{via}" if dues else f"no limit applies{via}"
    return Verdict.keep(why, due=min(dues) if dues else None, **details)


def judge_server(
    user: Mapping[str, Any],
    server_name: str,
    server: Mapping[str, Any],
    policy: Policy,
    now: datetime,
) -> Verdict:
    """Should this running server be stopped now, and why."""
    if server.get("pending"):
        return Verdict.keep(f"kept: {server['pending']} pending")
    if not server.get("ready"):
        return Verdict.keep("kept: not ready")
    if server_name == "" and not policy.cull_default_servers:
        return Verdict.keep("kept: default servers are not culled")
    if server_name != "" and not policy.cull_named_servers:
        return Verdict.keep("kept: named servers are not culled")
    rule = policy.rule_for(user, server_name, server)
    if rule and rule.never:
        return Verdict.keep(f"kept: never culled (rule {rule.name})", rule=rule.name)
    started = parse_time(server.get("started"))
    if started is None:
        return Verdict.keep("kept: the hub gives no start time")
    last_activity = parse_time(server.get("last_activity")) or started
    timeout, max_age = policy.limits(rule)
    return _decide(last_activity, started, timeout, max_age, now, rule, born_word="started")


def judge_user(user: Mapping[str, Any], policy: Policy, now: datetime) -> Verdict:
    """Should this user, whose servers are all stopped, be removed from the hub, and why."""
    if not policy.cull_users:
        return Verdict.keep("kept: users are not culled")
    if user.get("servers"):
        return Verdict.keep("kept: has servers")
    if user.get("admin") and not policy.cull_admin_users:
        return Verdict.keep("kept: admin users are not culled")
    rule = policy.rule_for(user, None, None)
    if rule and rule.never:
        return Verdict.keep(f"kept: never culled (rule {rule.name})", rule=rule.name)
    created = parse_time(user.get("created"))
    if created is None:
        return Verdict.keep("kept: the hub gives no creation time")
    last_activity = parse_time(user.get("last_activity")) or created
    timeout, max_age = policy.limits(rule)
    return _decide(last_activity, created, timeout, max_age, now, rule, born_word="created")


def keep_for_busy_kernel(verdict: Verdict, busy: bool, cap: int) -> bool:
    """A busy kernel spares an idle server (not one past max-age) until it is ``cap`` s idle.

    ``cap`` of 0 means no cap: a busy server is never culled for idleness.
    """
    if not busy or verdict.reason != IDLE:
        return False
    return cap == 0 or (verdict.idle is not None and verdict.idle.total_seconds() < cap)


@dataclass(frozen=True)
class Judged:
    """A running server and the verdict on it."""

    user: Mapping[str, Any]
    server_name: str
    server: Mapping[str, Any]
    verdict: Verdict

    @property
    def label(self) -> str:
        """``ana`` for a default server, ``ana/gpu`` for a named one (for logs and pages)."""
        return f"{self.user['name']}/{self.server_name}" if self.server_name else self.user["name"]


def judge_all(users: Sequence[Mapping[str, Any]], policy: Policy, now: datetime) -> list[Judged]:
    """Every server of every listed user, judged; the caller splits culls from keeps."""
    return [
        Judged(user, name, server, judge_server(user, name, server, policy, now))
        for user in users
        for name, server in (user.get("servers") or {}).items()
    ]
