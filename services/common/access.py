"""Who may use a service, as data: a service decides with its own rule, and its page header
links to the other services whose rules let this user in (no link that ends in a 403).

``hubservices-config`` knows every service's configuration when it writes the hub's lines, so it
hands each service its peers' rules (``$HUBSERVICES_PEERS``); no service asks another at run time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The environment variable that carries the other services' titles and rules.
PEERS_ENV = "HUBSERVICES_PEERS"


def pattern_matches(pattern: str, groups: Iterable[str]) -> list[str]:
    """What ``{course}`` stands for in each of ``groups`` that ``pattern`` matches, sorted."""
    before, _, after = pattern.partition("{course}")
    regex = re.compile(re.escape(before) + "(.+)" + re.escape(after))
    return sorted(m.group(1) for m in (regex.fullmatch(g) for g in groups) if m)


@dataclass(frozen=True)
class AccessRule:
    """Hub admins (if ``admin``), named users, members of named groups, and members of any
    group that ``group_pattern`` (e.g. ``formgrade-{course}``) matches."""

    admin: bool = True
    users: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)
    group_pattern: str = ""

    def allows(self, model: Mapping[str, Any]) -> bool:
        """Whether the hub's user model passes this rule (a service only if named in users)."""
        if model.get("kind") == "service":
            return model["name"] in self.users
        groups = model.get("groups", [])
        return bool(
            (self.admin and model.get("admin"))
            or model["name"] in self.users
            or self.groups.intersection(groups)
            or (self.group_pattern and pattern_matches(self.group_pattern, groups))
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "admin": self.admin,
            "users": sorted(self.users),
            "groups": sorted(self.groups),
            "group_pattern": self.group_pattern,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccessRule:
        """ValueError if ``data`` is not what :meth:`to_json` writes."""
        if not isinstance(data, Mapping):
            raise ValueError("an access rule must be an object")
        users, groups = data.get("users", []), data.get("groups", [])
        if not all(isinstance(v, str) for v in [*users, *groups]):
            raise ValueError("users and groups must be lists of names")
        return cls(
            admin=bool(data.get("admin", True)),
            users=frozenset(users),
            groups=frozenset(groups),
            group_pattern=str(data.get("group_pattern", "")),
        )


@dataclass(frozen=True)
class Peer:
    """Another service of this hub, as its header link needs it."""

    name: str
    title: str
    rule: AccessRule


def parse_peers(text: str) -> list[Peer]:
    """``$HUBSERVICES_PEERS`` (``{"stats": {"title": "Stats", "access": {...}}}``); ValueError
    naming what is wrong."""
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"${PEERS_ENV} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"${PEERS_ENV} must be an object of services")
    try:
        return [
            Peer(name, str(spec["title"]), AccessRule.from_json(spec["access"]))
            for name, spec in sorted(data.items())
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"${PEERS_ENV}: {e}") from None


def peers_json(peers: Iterable[Peer]) -> str:
    return json.dumps(
        {p.name: {"title": p.title, "access": p.rule.to_json()} for p in peers}, sort_keys=True
    )
