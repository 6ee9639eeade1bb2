"""Nobody loses a server by surprise: warned by e-mail, a user keeps their server running from
the culler's page in Chromium; a user who did nothing is culled; nobody keeps another's server.

A real hub (LightSpawner servers), the culler launched by the hub with the generated role, a
real SMTP server (aiosmtpd) on a port of 127.0.0.1 the test opened, and real Chromium.
"""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import expect

from tests.harness import free_port
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

LIGHT = 'c.JupyterHub.spawner_class = "tests.harness.lightspawner.LightSpawner"\n'
TIMEOUT = 60  # seconds idle before a server is culled
IDLE_AT_START = 20  # so a server is due 40 s after it starts, within warn_before
SCREENSHOTS = Path("/tmp/cull-screenshots")


class Inbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def people_hub(tmp_path: Path, inbox: tuple[Inbox, int]) -> Iterator[Hub]:
    _, smtp_port = inbox
    config = tmp_path / "cull_config.py"
    config.write_text(
        'c.Culler.smtp_host = "127.0.0.1"\n'
        f"c.Culler.smtp_port = {smtp_port}\n"
        'c.Culler.smtp_from = "culler@example.org"\n'
        'c.Culler.mail_to = "{username}@example.org"\n'
    )
    hub = Hub(tmp_path / "hub", services=["cull"], extra_config=LIGHT)
    hub.service_args["cull"] = [
        f"--config={config}",
        f"--timeout={TIMEOUT}",
        "--warn-before=50",
        "--cull-every=3600",
        "--max-extensions=2",
        f"--server-url={hub.url}",
    ]
    with hub:
        yield hub


def run_cycle(cull: httpx.Client) -> dict:
    """Run a cycle now through the culler's API and return it once finished."""
    last = cull.get("api/cycles", params={"limit": 1}).json()[0]["id"]
    assert cull.post("api/cycles").status_code == 202
    for _ in range(300):
        cycle = cull.get("api/cycles", params={"limit": 1}).json()[0]
        if cycle["id"] > last and cycle["finished_at"]:
            return cycle
        time.sleep(0.2)
    raise AssertionError("no cycle finished")


def servers_of(api: httpx.Client, user: str) -> dict:
    return api.get(f"users/{user}").json().get("servers") or {}


def xsrf_of(page: str) -> str:
    match = re.search(r'name="_xsrf" value="([^"]+)"', page)
    assert match, "no XSRF token on the page"
    return match.group(1)


def test_warned_user_keeps_server_running_and_idle_one_is_culled(
    people_hub: Hub, inbox: tuple[Inbox, int], hub_page, tmp_path: Path
) -> None:
    hub = people_hub
    mail, _ = inbox
    headers = {"Authorization": f"token {hub.admin_token}"}
    with httpx.Client(base_url=hub.api_url + "/", headers=headers, timeout=30) as api:
        for name in ("alice", "bob"):
            assert api.post("users", json={"usernames": [name]}).status_code in (201, 409)
            r = api.post(f"users/{name}/server", json={"idle_seconds": IDLE_AT_START})
            assert r.status_code in (201, 202), r.text
        started = time.monotonic()
        token = api.post(
            "users/admin/tokens", json={"scopes": ["access:services!service=cull"]}
        ).json()["token"]
        with httpx.Client(
            base_url=hub.service_url("cull"),
            headers={"Authorization": f"token {token}"},
            timeout=30,
        ) as cull:
            assert run_cycle(cull)["culled_servers"] == 0

            # both warned by e-mail, with the link to the page
            [to_alice] = mail.to("alice@example.org")
            [to_bob] = mail.to("bob@example.org")
            assert to_bob["From"] == "culler@example.org"
            assert "will be stopped at" in to_alice["Subject"]
            link = hub.service_url("cull")
            assert link in to_alice.get_content()
            assert "if it is not used before then" in to_alice.get_content()
            assert "(the culler's view now: active " in to_alice.get_content()

            # alice follows the link and keeps her server running
            SCREENSHOTS.mkdir(exist_ok=True)
            browser = hub_page(hub, "alice")
            page = browser.page
            page.set_default_timeout(20_000)
            page.goto(link)
            row = page.locator("#your-servers tr[data-server='']")
            assert "Due to stop" in page.inner_text("#your-servers")
            assert "(in " in row.inner_text()
            assert "Recent cycles" not in page.content()  # admins' views only
            assert "bob" not in page.inner_text("main")
            page.screenshot(path=str(SCREENSHOTS / "cull-warned.png"), full_page=True)
            row.get_by_role("button", name="Keep it running").click()
            page.wait_for_selector("#your-servers :text('1 of 2 used')")
            page.screenshot(path=str(SCREENSHOTS / "cull-kept.png"), full_page=True)
            assert browser.problems == []

            # bob cannot keep alice's server, with or without a valid XSRF token
            bob = hub.browser("bob")
            try:
                own_page = bob.get(hub.service_url("cull"))
                assert own_page.status_code == 200
                assert "alice" not in own_page.text
                form = {"user": "alice", "server": "", "_xsrf": xsrf_of(own_page.text)}
                r = bob.post(hub.service_url("cull", "keep"), data=form)
                assert r.status_code == 403
                assert "only your own servers" in r.text
                del form["_xsrf"]
                assert bob.post(hub.service_url("cull", "keep"), data=form).status_code == 403
                assert bob.get(hub.service_url("cull", "api/culls")).status_code == 403
                run_now = {"_xsrf": xsrf_of(own_page.text)}
                assert bob.post(hub.service_url("cull"), data=run_now).status_code == 403
            finally:
                bob.close()

            # past bob's due time: the next cycle culls bob, and alice's server survives
            time.sleep(max(0.0, TIMEOUT - IDLE_AT_START + 2 - (time.monotonic() - started)))
            cycle = run_cycle(cull)
            assert servers_of(api, "bob") == {}
            assert "" in servers_of(api, "alice")
            assert cycle["culled_servers"] == 1
            culls = cull.get("api/culls").json()
            assert [(c["user"], c["outcome"]) for c in culls] == [("bob", "stopped")]
    for shot in SCREENSHOTS.glob("cull-*.png"):
        shutil.copy(shot, tmp_path / shot.name)


@pytest.fixture
def quiet_hub(tmp_path: Path) -> Iterator[Hub]:
    """A culler that runs a cycle only when asked (every hour otherwise)."""
    hub = Hub(tmp_path / "hub", services=["cull"], extra_config=LIGHT)
    hub.service_args["cull"] = [f"--timeout={TIMEOUT}", "--cull-every=3600"]
    with hub:
        yield hub


def test_run_a_cycle_now_shows_its_result_without_a_reload(
    quiet_hub: Hub, hub_page, tmp_path: Path
) -> None:
    """The admin clicks "Run a cycle now": the page says it runs, then what the cycle found,
    and its look-ahead and cycles show that cycle, all on the page they clicked on."""
    hub = quiet_hub
    browser = hub_page(hub, "admin")
    page = browser.page
    page.goto(hub.service_url("cull"))
    headers = {"Authorization": f"token {hub.admin_token}"}
    with httpx.Client(base_url=hub.api_url + "/", headers=headers, timeout=30) as api:
        assert api.post("users", json={"usernames": ["carol"]}).status_code in (201, 409)
        r = api.post("users/carol/server", json={"idle_seconds": IDLE_AT_START})
        assert r.status_code in (201, 202), r.text
    upcoming = page.locator("#upcoming")
    expect(upcoming).to_contain_text("Nothing will be culled")  # as of the last cycle
    cycles_before = page.locator("#cycles tbody tr").count()
    # what the status line says, and whether the button may be clicked, as it changes
    page.evaluate(
        """() => {
            window.seen = [];
            const status = document.getElementById("run-status");
            const button = document.querySelector("#run-now button");
            new MutationObserver(() => window.seen.push([status.hidden ? "" : status.textContent,
                                                         button.disabled]))
                .observe(document.getElementById("run-now").parentNode,
                         {subtree: true, childList: true, characterData: true, attributes: true});
        }"""
    )

    page.get_by_role("button", name="Run a cycle now").click()
    # carol's server, and the admin's own (the hub starts it at login); both idle < timeout
    finished = "Cycle finished: 2 servers examined, 0 culled."
    expect(page.locator("#run-status")).to_have_text(finished, timeout=30_000)
    seen = page.evaluate("window.seen")  # the page was not reloaded: the observer is still there
    assert ["Running a cycle…", True] in seen and seen[-1] == [finished, False], seen
    expect(upcoming.locator("tr", has_text="carol")).to_have_count(1)
    expect(page.locator("#cycles tbody tr")).to_have_count(cycles_before + 1)
    expect(page.locator("#cycles tbody tr").first).not_to_contain_text("running")
    page.screenshot(path=tmp_path / "cull-ran.png", full_page=True)
    assert browser.problems == [], browser.problems
