"""Warning e-mails: the owner of a server hears before it is stopped, with a link to keep it.

The address comes from a template (``{username}@example.org``): the hub's ``auth_state`` is not
available to a service without ``admin:auth_state``, which is far more than a culler should hold.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage


@dataclass(frozen=True)
class Mailer:
    """Where and how warning e-mails go; one SMTP connection per e-mail (warnings are rare)."""

    host: str
    port: int
    sender: str
    address_template: str  # e.g. "{username}@example.org"
    page_url: str  # the culler's page, where the owner can keep the server running
    starttls: bool = False
    username: str = ""
    password: str = ""  # from the environment, never the command line
    timeout: float = 30.0

    def address(self, user: str) -> str:
        """The user's address; ``ValueError`` if the template makes no usable one of the name."""
        address = self.address_template.format(username=user)
        if address.count("@") != 1 or any(c in address for c in "\r\n<>,;\"' "):
            raise ValueError(f"no e-mail address for user {user!r} (got {address!r})")
        return address

    def message(self, notice: Mapping[str, str]) -> EmailMessage:
        """The warning for ``notice`` (user, server, due, why), plain text."""
        server = f"server {notice['server']!r}" if notice["server"] else "server"
        due = datetime.fromisoformat(notice["due"]).strftime("%Y-%m-%d %H:%M UTC")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = self.address(notice["user"])
        message["Subject"] = f"Your Jupyter {server} will be stopped at {due}"
        message.set_content(
            f"Hello {notice['user']},\n\n"
            f"your Jupyter {server} will be stopped at {due} if it is not used before then\n"
            f"(the culler's view now: {notice['why']}).\n\n"
            f"Save your work, or keep it running from this page:\n\n    {self.page_url}\n\n"
            "Using the server (running code, saving a notebook) keeps it running too.\n"
        )
        return message

    def send(self, notice: Mapping[str, str]) -> None:
        """Send the warning; ``OSError`` (smtplib's errors are) or ``ValueError`` if not."""
        message = self.message(notice)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(message)
