"""The stats service under a real hub: sessions and metrics follow servers, restarts lose
nothing, exports, a real Prometheus scraping it, and the dashboard in real Chromium.

One hub of our own (LightSpawner, one-second polls) for the module, so the timing is ours;
the tests run in file order and use their own users.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubservices.common.hubapi import HubAPI
from tests.harness.hub import Hub

# fixtures: prometheus, promtool; chromium, hub_page
pytestmark = pytest.mark.hub

CONFIG = """
c.JupyterHub.spawner_class = "tests.harness.lightspawner.LightSpawner"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.allow_named_servers = True
"""
GROUP = "course-x"


@pytest.fixture(scope="module")
def stats_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = Hub(
        tmp_path_factory.mktemp("statshub"),
        services=["stats"],
        # polls every second, and a full sync every 3 s: users without a server show then
        service_args={
            "stats": ["--poll-interval=1", "--sync-interval=3", f"--metrics-groups={GROUP}"]
        },
        extra_config=CONFIG,
        prometheus_token=secrets.token_hex(32),
    )
    with hub:
        yield hub


@pytest.fixture
async def api(stats_hub: Hub) -> AsyncIterator[HubAPI]:
    async with HubAPI(stats_hub.api_url, stats_hub.admin_token) as client:
        yield client


@pytest.fixture
async def admin_get(stats_hub: Hub, api: HubAPI) -> Callable[..., httpx.Response]:
    """GET a stats path with an admin's token holding only access to the stats service."""
    token = await api.create_token("admin", scopes=["access:services!service=stats"])

    def get(path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return httpx.get(
            stats_hub.service_url("stats", path), headers=headers, timeout=10, **kwargs
        )

    return get


def metrics(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def wait_until(check: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
    """Call ``check`` until it returns something true (polls run every second)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout}s: {what}")
        time.sleep(0.3)


def sessions_of(get: Callable[..., httpx.Response], name: str) -> list[dict]:
    r = get(f"api/users/{quote(name, safe='')}/sessions")
    return r.json()["sessions"] if r.status_code == 200 else []


async def test_sessions_and_metrics_follow_servers(
    stats_hub: Hub, api: HubAPI, admin_get: Callable[..., httpx.Response]
) -> None:
    await api.create_users(["a b", "dana#1", "carol"])
    await api.create_group(GROUP)
    await api.add_group_users(GROUP, ["carol", "a b"])
    await api.start_server("a b")
    await api.start_server("dana#1", "gpu")

    def running() -> dict | None:
        m = metrics(admin_get("metrics").text)
        servers = m[("hubservices_stats_servers", (("kind", "default"), ("state", "running")))]
        named = m[("hubservices_stats_servers", (("kind", "named"), ("state", "running")))]
        users = m[("hubservices_stats_users", ())]  # carol, without a server: at a full sync
        return m if (servers, named, users) == (1, 1, 4) else None  # admin too

    m = wait_until(running, what="two running servers and four users in the metrics")
    # what the service costs the hub: its requests by route, no user names in labels
    listed = (
        "hubservices_stats_hub_requests_total",
        (("code", "200"), ("method", "GET"), ("route", "/users")),
    )
    assert m[listed] >= 2
    assert not any("dana" in str(labels) for _, labels in m)
    assert m[("hubservices_stats_group_running_servers", (("group", GROUP),))] == 1
    assert m[("hubservices_stats_active_users", (("window", "1h"),))] >= 2
    assert m[("hubservices_stats_unique_users", (("period", "day"),))] >= 2
    assert ("hubservices_stats_hub_info", (("version", api.hub_version),)) in m
    assert m[("hubservices_stats_last_successful_poll_timestamp_seconds", ())] > time.time() - 10

    ab = wait_until(lambda: sessions_of(admin_get, "a b"), what="a session of 'a b'")
    dana = sessions_of(admin_get, "dana#1")
    assert [(s["server"], s["ended"]) for s in ab] == [("", None)]
    assert [(s["server"], s["ended"]) for s in dana] == [("gpu", None)]
    assert admin_get(f"api/users/{quote('nobody here')}/sessions").status_code == 404

    await api.stop_server("a b")
    ended = wait_until(
        lambda: [s for s in sessions_of(admin_get, "a b") if s["ended"]], what="ended session"
    )
    assert ended[0]["end_reason"] == "stopped"
    assert ended[0]["started"] == ab[0]["started"]

    def stopped() -> dict | None:
        m = metrics(admin_get("metrics").text)
        return (
            m if m.get(("hubservices_stats_server_stops_total", (("reason", "stopped"),))) else None
        )

    m = wait_until(stopped, what="a stop counted")
    assert m[("hubservices_stats_server_starts_total", ())] == 2
    assert m[("hubservices_stats_session_duration_seconds_count", ())] == 1
    assert m[("hubservices_stats_server_seconds_total", ())] > 0


async def test_usage_exports_and_bad_parameters(
    stats_hub: Hub, api: HubAPI, admin_get: Callable[..., httpx.Response]
) -> None:
    r = admin_get("api/usage")
    assert r.status_code == 200
    users = {u["user"]: u for u in r.json()["users"]}
    assert users["a b"]["sessions"] == 1
    assert users["dana#1"]["server_hours"] > 0, r.json()

    csv_r = admin_get("api/usage", params={"format": "csv", "group": GROUP})
    assert csv_r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(csv_r.text)))
    assert {row["user"] for row in rows} == {"a b"}  # carol has no usage, dana not in group
    assert set(rows[0]) == {"user", "sessions", "server_hours", "active_hours", "days_active"}
    assert int(rows[0]["sessions"]) == 1 and float(rows[0]["server_hours"]) > 0

    one = admin_get("api/usage", params={"user": "dana#1"}).json()["users"]
    assert [u["user"] for u in one] == ["dana#1"]

    for params, message in [
        ({"from": "last week"}, "from must be a date"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "is after to"),
        ({"format": "xlsx"}, "format must be json or csv"),
        ({"from": "0001-01-01"}, "from must be between 1970-01-01 and 9998-12-31"),
        ({"to": "0001-01-01"}, "to must be between 1970-01-01 and 9998-12-31"),
        ({"to": "9999-12-31"}, "to must be between 1970-01-01 and 9998-12-31"),
        ({"from": "9999-12-31", "format": "csv"}, "from must be between"),
        ({"to": "\u2603\x00"}, "to must be a date like 2026-01-31"),
    ]:
        bad = admin_get("api/usage", params=params)
        assert bad.status_code == 400
        assert message in bad.json()["message"]
    for params in [{"from": "9998-12-01", "to": "9998-12-31"}, {"to": "1970-01-02"}]:
        edge = admin_get("api/usage", params=params)
        assert edge.status_code == 200 and edge.json()["users"] == [], params
    assert admin_get("api/dashboard", params={"range": "year"}).status_code == 400

    await api.create_users(["student-x"])
    student = await api.create_token("student-x", scopes=["access:services!service=stats"])
    denied = httpx.get(
        stats_hub.service_url("stats", "api/usage"),
        headers={"Authorization": f"Bearer {student}"},
    )
    assert denied.status_code == 403


async def test_metrics_pass_promtool_and_prometheus_scrapes_them(
    stats_hub: Hub,
    api: HubAPI,
    admin_get: Callable[..., httpx.Response],
    promtool: Callable[[str], Any],
    prometheus: Callable[[str, str], Any],
) -> None:
    text = admin_get("metrics").text
    result = promtool(text)
    assert result.returncode == 0, result.stdout + result.stderr
    om = admin_get("metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.text.rstrip().endswith("# EOF")
    gz = admin_get("metrics", headers={"Accept-Encoding": "gzip"})
    assert gz.headers.get("Content-Encoding") == "gzip"
    # no series may clash with the hub's own metrics
    assert all(n.startswith("hubservices_stats_") for (n, _) in metrics(text))

    # the scraper is the generated prometheus service, whose token can only read metrics
    assert stats_hub.prometheus_token
    prom = prometheus(stats_hub.service_url("stats", "metrics"), stats_hub.prometheus_token)
    up = prom.wait_for('up{job="hubservices-stats"} == 1')
    assert up[0]["value"][1] == "1"
    running = prom.wait_for('hubservices_stats_servers{state="running",kind="named"}')
    assert running[0]["value"][1] == "1"
    # admin, a b, dana#1, carol, student-x
    assert prom.wait_for("hubservices_stats_users")[0]["value"][1] == "5"
    assert prom.wait_for('hubservices_stats_active_users{window="24h"}')


def test_dashboard_in_chromium(stats_hub: Hub, hub_page, tmp_path: Path) -> None:
    browser = hub_page(stats_hub, "admin")
    page = browser.page
    page.set_default_timeout(10_000)
    page.goto(stats_hub.service_url("stats"))
    shot = tmp_path / "stats-dashboard.png"
    try:
        page.wait_for_selector("#status:has-text('Last week')")
        # a flat line has no height, so wait for it to exist rather than to be visible
        page.wait_for_selector("#chart-series svg polyline", state="attached")
        assert "a b" in page.inner_text("#chart-users")
        assert GROUP in page.inner_text("#groups")
        assert "not in this database" in page.inner_text("#culls")
        page.click("button[data-range=day]")
        page.wait_for_selector("#status:has-text('Last day')")
        page.click("button[data-range=semester]")
        page.wait_for_selector("#status:has-text('Last semester')")
        page.click("button[data-range=week]")
        page.wait_for_selector("#status:has-text('Last week')")
    finally:
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert browser.problems == []  # no script errors, no CSP violations


async def test_restart_mid_session_loses_and_duplicates_nothing(
    stats_hub: Hub, api: HubAPI, admin_get: Callable[..., httpx.Response]
) -> None:
    before = sessions_of(admin_get, "dana#1")
    assert [s["ended"] for s in before] == [None]
    stats_hub.restart()  # the hub, and with it the stats service; servers keep running
    time.sleep(3)  # a few polls of the restarted service
    after = sessions_of(admin_get, "dana#1")
    assert after == [dict(before[0], last_activity=after[0]["last_activity"])]
    ab = sessions_of(admin_get, "a b")
    assert len(ab) == 1 and ab[0]["end_reason"] == "stopped"

    m = metrics(admin_get("metrics").text)
    assert m.get(("hubservices_stats_server_starts_total", ()), 0) == 0  # nothing new started
    assert m[("hubservices_stats_servers", (("kind", "named"), ("state", "running")))] == 1


async def test_usage_csv_opens_hostile_usernames_as_text(
    stats_hub: Hub, api: HubAPI, admin_get: Callable[..., httpx.Response]
) -> None:
    """Usernames a spreadsheet would run as formulas (OWASP's CSV injection)."""
    hostile = ['=hyperlink("http:evil","x")', "+cmd|' -c calc'!a0", "-2+3", "@sum(1+1)"]
    await api.create_users(hostile)
    for name in hostile:
        await api.start_server(name)

    def usage() -> dict[str, dict] | None:
        users = {u["user"]: u for u in admin_get("api/usage").json()["users"]}
        return users if all(users.get(n, {}).get("sessions") for n in hostile) else None

    wait_until(usage, what="sessions of the hostile users")
    r = admin_get("api/usage", params={"format": "csv"})
    rows = {row["user"]: row for row in csv.DictReader(io.StringIO(r.text, newline=""))}
    for name in hostile:
        assert int(rows["'" + name]["sessions"]) == 1, rows.keys()
    assert not any(user.startswith(("=", "+", "-", "@")) for user in rows)
