"""Warning e-mails: the address from the template, and what the owner reads."""

from __future__ import annotations

import pytest

from hubservices.cull.mail import Mailer

MAILER = Mailer(
    host="127.0.0.1",
    port=25,
    sender="jupyter@example.org",
    address_template="{username}@example.org",
    page_url="https://hub.example.org/services/cull/",
)
NOTICE = {
    "user": "ana",
    "server": "gpu",
    "due": "2026-12-02T10:30:00+00:00",
    "why": "active 50m ago",
}


def test_the_warning_names_the_server_the_time_and_the_page() -> None:
    message = MAILER.message(NOTICE)
    assert message["To"] == "ana@example.org"
    assert message["Subject"] == "Your Jupyter server 'gpu' will be stopped at 2026-12-02 10:30 UTC"
    assert "https://hub.example.org/services/cull/" in message.get_content()


@pytest.mark.parametrize("name", ["a b", "x\r\nBcc: all@example.org", 'q"uote', "a,b", "<x>"])
def test_a_name_that_makes_no_plain_address_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="no e-mail address for user"):
        MAILER.message({**NOTICE, "user": name})


def test_a_server_name_cannot_add_headers() -> None:
    message = MAILER.message({**NOTICE, "server": "x\nBcc: all@example.org"})
    assert message["Bcc"] is None
    assert b"\nBcc:" not in message.as_bytes()
