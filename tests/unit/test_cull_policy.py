"""The culler's decisions, without a hub: the user model, the policy and the time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from hubservices.cull.policy import (
    IDLE,
    MAX_AGE,
    Policy,
    Rule,
    judge_server,
    judge_user,
    keep_for_busy_kernel,
    refuse_extension,
)

NOW = datetime(2026, 11, 22, 12, 0)  # naive UTC, as the hub stores it


def ago(**kw: float) -> str:
    return (NOW - timedelta(**kw)).isoformat() + "Z"


def server(idle_minutes: float = 0, age_minutes: float = 60, **extra) -> dict:
    model: dict[str, Any] = {
        "ready": True,
        "pending": None,
        "started": ago(minutes=age_minutes),
        "last_activity": ago(minutes=idle_minutes),
        "user_options": {},
    }
    model.update(extra)
    return model


def user(name: str = "ana", groups=(), admin: bool = False, **extra: Any) -> dict:
    return {"name": name, "groups": list(groups), "admin": admin, "servers": {}, **extra}


def test_idle_server_is_culled_with_reason() -> None:
    v = judge_server(user(), "", server(idle_minutes=11), Policy(timeout=600), NOW)
    assert v.cull and v.reason == IDLE
    assert v.why == "idle 11m00s (timeout 10m00s)"


def test_active_server_is_kept_until_due() -> None:
    v = judge_server(user(), "", server(idle_minutes=4), Policy(timeout=600), NOW)
    assert not v.cull
    assert v.due == NOW + timedelta(minutes=6)


def test_server_without_activity_counts_from_start() -> None:
    v = judge_server(user(), "", server(age_minutes=20, last_activity=None), Policy(), NOW)
    assert v.cull and v.idle == timedelta(minutes=20)


@pytest.mark.parametrize("pending", ["spawn", "stop"])
def test_pending_server_is_never_touched(pending: str) -> None:
    v = judge_server(user(), "", server(idle_minutes=999, pending=pending), Policy(), NOW)
    assert not v.cull and pending in v.why


def test_not_ready_server_is_kept() -> None:
    assert not judge_server(user(), "", server(idle_minutes=99, ready=False), Policy(), NOW).cull


def test_max_age_culls_an_active_server() -> None:
    v = judge_server(user(), "", server(idle_minutes=1, age_minutes=130), Policy(max_age=7200), NOW)
    assert v.cull and v.reason == MAX_AGE
    assert "max-age 2h00m" in v.why


@pytest.mark.parametrize(
    "name, policy",
    [
        ("", Policy(cull_default_servers=False, max_age=60)),
        ("gpu", Policy(cull_named_servers=False, max_age=60)),
    ],
)
def test_max_age_respects_default_and_named_switches(name: str, policy: Policy) -> None:
    v = judge_server(user(), name, server(idle_minutes=999, age_minutes=999), policy, NOW)
    assert not v.cull and v.due is None


def test_rules_first_match_wins() -> None:
    policy = Policy(
        timeout=600,
        rules=(
            Rule("staff", groups=frozenset({"staff"}), never=True),
            Rule("long-jobs", groups=frozenset({"long-jobs"}), timeout=8 * 3600),
            Rule("gpu", user_options={"profile": "gpu"}, timeout=1800),
        ),
    )
    both = user(groups=["staff", "long-jobs"])
    assert judge_server(both, "", server(idle_minutes=9999), policy, NOW).why.endswith("staff)")
    long_job = user(groups=["long-jobs"])
    assert not judge_server(long_job, "", server(idle_minutes=7 * 60), policy, NOW).cull
    assert judge_server(long_job, "", server(idle_minutes=8 * 60), policy, NOW).cull
    gpu = server(idle_minutes=31, user_options={"profile": "gpu"})
    assert judge_server(user(), "", gpu, policy, NOW).rule == "gpu"
    assert judge_server(user(), "", gpu, policy, NOW).cull
    cpu = server(idle_minutes=31, user_options={"profile": "cpu"})
    assert judge_server(user(), "", cpu, policy, NOW).rule is None


def test_rule_by_user_pattern_and_server_name() -> None:
    policy = Policy(
        rules=(Rule("guests", users=frozenset({"guest-*"}), servers=frozenset({""}), timeout=60),)
    )
    assert judge_server(user("guest-7"), "", server(idle_minutes=2), policy, NOW).cull
    assert not judge_server(user("guest-7"), "big", server(idle_minutes=2), policy, NOW).cull
    assert not judge_server(user("ana"), "", server(idle_minutes=2), policy, NOW).cull


def test_rule_max_age_zero_switches_the_global_one_off() -> None:
    policy = Policy(max_age=3600, rules=(Rule("marathon", groups=frozenset({"m"}), max_age=0),))
    assert not judge_server(user(groups=["m"]), "", server(age_minutes=600), policy, NOW).cull


def test_user_culling() -> None:
    policy = Policy(cull_users=True, timeout=600)
    stale = user(last_activity=ago(hours=2), created=ago(days=3))
    assert judge_user(stale, policy, NOW).cull
    assert not judge_user(stale, Policy(cull_users=False), NOW).cull
    assert not judge_user({**stale, "servers": {"": server()}}, policy, NOW).cull
    admin = {**stale, "admin": True}
    assert judge_user(admin, policy, NOW).cull
    assert not judge_user(admin, Policy(cull_users=True, cull_admin_users=False), NOW).cull


def test_user_max_age_respects_admin_and_protected_groups() -> None:
    policy = Policy(
        cull_users=True,
        cull_admin_users=False,
        timeout=0,
        max_age=86400,
        rules=(Rule("staff", groups=frozenset({"staff"}), never=True),),
    )
    old: dict[str, Any] = {"last_activity": ago(minutes=1), "created": ago(days=5)}
    assert judge_user(user(**old), policy, NOW).reason == MAX_AGE
    assert not judge_user(user(admin=True, **old), policy, NOW).cull
    assert not judge_user(user(groups=["staff"], **old), policy, NOW).cull


def test_server_only_rules_do_not_describe_a_user_without_servers() -> None:
    policy = Policy(
        cull_users=True, rules=(Rule("gpu", user_options={"profile": "gpu"}, never=True),)
    )
    assert judge_user(user(last_activity=ago(hours=1), created=ago(days=1)), policy, NOW).cull


def test_busy_kernel_spares_an_idle_server_up_to_the_cap() -> None:
    idle = judge_server(user(), "", server(idle_minutes=30), Policy(timeout=600), NOW)
    assert keep_for_busy_kernel(idle, busy=True, cap=3600)
    assert not keep_for_busy_kernel(idle, busy=False, cap=3600)
    assert not keep_for_busy_kernel(idle, busy=True, cap=1200)
    assert keep_for_busy_kernel(idle, busy=True, cap=0)
    old = judge_server(user(), "", server(idle_minutes=1, age_minutes=99), Policy(max_age=60), NOW)
    assert not keep_for_busy_kernel(old, busy=True, cap=0)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "x", "timeot": 5}, "policy #1 'x': unknown key 'timeot'"),
        ({"timeout": -1}, "timeout must be seconds >= 0"),
        ({"groups": "staff"}, "groups must be a list of names"),
        ({"user_options": ["gpu"]}, "user_options must be a dict"),
        ({"never": "yes"}, "never must be true or false"),
        ("staff", "policy #1 must be a dict"),
    ],
)
def test_bad_rules_are_named(config, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("#", "\\#")):
        Rule.from_config(0, config)


def test_keep_it_running_moves_only_the_idle_deadline_a_few_times() -> None:
    policy = Policy(timeout=3600, max_age=8 * 3600)
    idle = judge_server(user(), "", server(idle_minutes=50, age_minutes=120), policy, NOW)
    assert idle.due_reason == IDLE
    assert refuse_extension(idle, used=0, allowed=2) is None
    assert (
        refuse_extension(idle, used=2, allowed=2)
        == "already kept running 2 of 2 times since it started"
    )
    overdue = judge_server(user(), "", server(idle_minutes=67, age_minutes=120), policy, NOW)
    assert overdue.cull and refuse_extension(overdue, used=0, allowed=2) is None
    old = judge_server(user(), "", server(idle_minutes=50, age_minutes=474), policy, NOW)
    assert old.due_reason == MAX_AGE
    assert "maximum age" in (refuse_extension(old, used=0, allowed=2) or "")
    never = judge_server(
        user(), "", server(idle_minutes=50, age_minutes=120), Policy(timeout=0), NOW
    )
    assert (
        refuse_extension(never, used=0, allowed=2)
        == "nothing to extend: it is not due to be stopped"
    )


def test_a_kept_server_says_which_limit_stops_it() -> None:
    rules = (Rule(name="gpu", user_options={"profile": "gpu"}, timeout=1800),)
    policy = Policy(timeout=3600, max_age=7200, rules=rules)
    idle = judge_server(user(), "", server(idle_minutes=10, age_minutes=30), policy, NOW)
    assert (idle.due_reason, idle.due_why) == (IDLE, "idle timeout 1h00m")
    old = judge_server(user(), "", server(idle_minutes=10, age_minutes=100), policy, NOW)
    assert (old.due_reason, old.due_why) == (MAX_AGE, "max-age 2h00m")
    gpu = server(idle_minutes=10, age_minutes=30, user_options={"profile": "gpu"})
    assert judge_server(user(), "", gpu, policy, NOW).due_why == "idle timeout 30m00s, rule gpu"
