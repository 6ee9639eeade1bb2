"""Real headless Chromium (the Debian ``chromium`` binary) driven by Playwright, logged in to a
hub through its login form, so pages behind hub OAuth are tested as a browser sees them.

``hub_page(hub, "admin")`` gives a :class:`BrowserPage`: a Playwright page logged in as that
user, and the page's console errors and uncaught exceptions (CSP violations included). Browsers
are closed at the end, also when the test failed. Never runs ``playwright install``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.harness.hub import PASSWORD, Hub

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class BrowserPage:
    page: Page
    problems: list[str] = field(default_factory=list)

    def console_message(self, kind: str, text: str) -> None:
        """A console error is a problem the test reports; other messages are not."""
        if kind == "error":
            self.problems.append(text)


@pytest.fixture
def chromium() -> Iterator[Browser]:
    """A headless Chromium (Playwright ``Browser``) for one test.

    Per test, not per session: Playwright's sync API keeps an event loop running in this thread
    while it is open, which would break the async tests that run after it.
    """
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is not installed (Debian package chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def hub_page(chromium: Browser) -> Iterator[Callable[..., BrowserPage]]:
    """``hub_page(hub, username)``: a fresh browser context logged in through the hub."""
    contexts: list[BrowserContext] = []

    def login(hub: Hub, username: str, password: str = PASSWORD) -> BrowserPage:
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        result = BrowserPage(page)
        page.on("console", lambda m: result.console_message(m.type, m.text))
        page.on("pageerror", lambda e: result.problems.append(str(e)))
        page.goto(f"{hub.url}/hub/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("[type=submit]")
        page.wait_for_url(lambda url: "/hub/login" not in url)
        return result

    yield login
    for context in contexts:
        context.close()
