"""The three services run under a real hub: routes, hub login, access, tokens, XSRF, metrics."""

from __future__ import annotations

import re

import httpx
import pytest

from hubservices.common.hubapi import HubAPI
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

SERVICES = ["cull", "stats", "formgrader"]


@pytest.mark.parametrize("name", SERVICES)
def test_health_is_public_and_reports_the_hub(hub: Hub, name: str) -> None:
    r = httpx.get(hub.service_url(name, "health"))
    assert r.status_code == 200
    body = r.json()
    assert body["service"] == name
    assert body["hub"] == {"reachable": True}  # nothing more to anonymous callers


@pytest.mark.parametrize("name", SERVICES)
def test_anonymous_browser_is_sent_to_hub_login(hub: Hub, name: str) -> None:
    with httpx.Client(follow_redirects=True) as client:
        r = client.get(hub.service_url(name))
    assert r.url.path == "/hub/login"
    assert "/hub/api/oauth2/authorize" in r.url.params["next"]


@pytest.mark.parametrize("name", SERVICES)
def test_admin_logs_in_through_hub_oauth(hub: Hub, browser, name: str) -> None:
    client = browser("admin")
    r = client.get(hub.service_url(name))
    assert r.status_code == 200
    assert any("/oauth_callback" in h.url.path for h in r.history)
    assert "admin (admin)" in r.text
    assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert r.headers["X-Frame-Options"] == "SAMEORIGIN"
    # the service remembers the login: no second trip through the hub
    again = client.get(hub.service_url(name), follow_redirects=False)
    assert again.status_code == 200


async def test_non_admin_gets_403_page(hub: Hub, hub_api: HubAPI, browser, unique) -> None:
    """The stats service is for admins (cull and formgrader show every user their own)."""
    student = unique("student")
    await hub_api.create_users([student])
    r = browser(student).get(hub.service_url("stats"))
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("text/html")
    assert f"{student} may not use the stats service" in r.text


async def test_grader_sees_their_courses(hub: Hub, hub_api: HubAPI, browser, unique) -> None:
    grader = unique("grader")
    course = unique("course")
    await hub_api.create_users([grader])
    await hub_api.create_group(f"formgrade-{course}")
    await hub_api.add_group_users(f"formgrade-{course}", [grader])
    client = browser(grader)
    page = client.get(hub.service_url("formgrader"))
    assert page.status_code == 200
    assert f"<li>{course}</li>" in page.text
    assert client.get(hub.service_url("stats")).status_code == 403


def test_anonymous_api_gets_403_json(hub: Hub) -> None:
    r = httpx.get(hub.service_url("stats", "api/user"))
    assert r.status_code == 403
    assert r.json() == {"status": 403, "message": "Authentication required."}


async def test_api_token_with_and_without_the_scope(hub: Hub, hub_api: HubAPI) -> None:
    allowed = await hub_api.create_token("admin", scopes=["access:services!service=stats"])
    r = httpx.get(
        hub.service_url("stats", "api/user"), headers={"Authorization": f"token {allowed}"}
    )
    assert r.status_code == 200
    assert r.json()["name"] == "admin"
    assert r.json()["admin"] is True

    lacking = await hub_api.create_token("admin", scopes=["read:users:name!user"])
    r = httpx.get(
        hub.service_url("stats", "api/user"), headers={"Authorization": f"Bearer {lacking}"}
    )
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json()["status"] == 403


def test_cookie_post_needs_xsrf(hub: Hub, browser) -> None:
    client = browser("admin")
    page = client.get(hub.service_url("cull"))
    found = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    assert found, page.text
    token = found.group(1)

    forged = client.post(hub.service_url("cull", "logout"), follow_redirects=False)
    assert forged.status_code == 403
    assert client.get(hub.service_url("cull"), follow_redirects=False).status_code == 200

    real = client.post(
        hub.service_url("cull", "logout"), data={"_xsrf": token}, follow_redirects=False
    )
    assert real.status_code == 302
    assert real.headers["Location"] == "/hub/logout"
    # the service's login is gone: the next visit goes back through the hub
    assert client.get(hub.service_url("cull"), follow_redirects=False).status_code == 302


@pytest.mark.parametrize("name", SERVICES)
async def test_metrics_are_for_prometheus_and_admins_not_students(
    hub: Hub, hub_api: HubAPI, browser, unique, name: str
) -> None:
    """Every user may reach every service (to be told no by it): that is not enough."""
    student = unique("student")
    await hub_api.create_users([student])
    url = hub.service_url(name, "metrics")
    access = [f"access:services!service={name}"]
    student_token = await hub_api.create_token(student, scopes=access)
    admin_token = await hub_api.create_token("admin", scopes=access)

    def scrape(token: str) -> int:
        return httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code

    assert httpx.get(url).status_code == 403
    assert scrape(student_token) == 403
    assert browser(student).get(url).status_code == 403  # the student's own login cookie
    assert scrape(admin_token) == 200
    assert hub.prometheus_token
    assert scrape(hub.prometheus_token) == 200  # the generated prometheus service's token


async def test_metrics_negotiate_openmetrics(hub: Hub) -> None:
    assert hub.prometheus_token
    auth = {"Authorization": f"Bearer {hub.prometheus_token}"}
    text = httpx.get(hub.service_url("cull", "metrics"), headers=auth)
    assert text.status_code == 200
    assert text.headers["Content-Type"].startswith("text/plain")
    assert 'hubservices_cull_build_info{version="' in text.text
    om = httpx.get(
        hub.service_url("cull", "metrics"),
        headers={**auth, "Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")


def test_unknown_path_is_a_404_page(hub: Hub, browser) -> None:
    r = browser("admin").get(hub.service_url("stats", "no/such/page"))
    assert r.status_code == 404
    assert "Nothing at /services/stats/no/such/page" in r.text


@pytest.mark.parametrize("name", SERVICES)
def test_unknown_request_methods_share_one_metrics_label(hub: Hub, name: str) -> None:
    """Whoever reaches a service's port cannot add metric series with made-up methods."""
    direct = f"http://127.0.0.1:{hub.service_ports[name]}/services/{name}/health"
    made_up = [f"X{i}{name.upper()}" for i in range(5)] + ["PROPFIND"]
    for method in made_up:
        assert httpx.request(method, direct).status_code == 405
    assert hub.prometheus_token
    auth = {"Authorization": f"Bearer {hub.prometheus_token}"}
    text = httpx.get(hub.service_url(name, "metrics"), headers=auth).text
    methods = set(re.findall(r'_http_request_duration_seconds_count\{[^}]*method="([^"]+)"', text))
    assert "other" in methods and "GET" in methods
    assert not methods & set(made_up)
