"""E-mail over SMTP (aiosmtplib) to the tier's recipients: the title as subject, the brief and the links as body.

Recipients that are not e-mail addresses (chat handles, names: a tier lists whoever it pages) are left out; with
none left the delivery fails at once with "no recipients". SMTP's 5xx replies (refused recipient, failed auth)
are permanent, its 4xx and lost connections are retried. The password is never logged nor put in an error.
"""

from __future__ import annotations

import hashlib
import re
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses, make_msgid
from typing import Any

import aiosmtplib

from scheduler.escalations.delivery import DeliveryFailure, with_retries
from scheduler.escalations.notifications import DeliveryResult, EmailChannelConfig, Notification

_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")
LINK_LABELS = (("approve", "Approve"), ("reject", "Reject"), ("page", "Approvals page"))


def email_recipients(recipients: tuple[str, ...]) -> list[tuple[str, str]]:
    """(display name, address) of each recipient that is an e-mail address, first occurrence only."""
    found: dict[str, tuple[str, str]] = {}
    for display, address in getaddresses(list(recipients)):
        if _ADDRESS.fullmatch(address) and address.lower() not in found:
            found[address.lower()] = (display, address)
    return list(found.values())


def email_subject(notification: Notification) -> str:
    title = " ".join(notification.title.split())  # a line break in a header would be refused (or injected)
    if notification.kind == "resolved":
        return f"[resolved] {title}"
    if notification.reminder:
        return f"[reminder {notification.reminder}] {title}"
    return title


def email_body(notification: Notification) -> str:
    lines = [notification.text.rstrip(), ""]
    links = [(label, notification.links[key]) for key, label in LINK_LABELS if notification.links.get(key)]
    if links and notification.kind == "new":
        lines += [f"{label}: {url}" for label, url in links] + [""]
    elif notification.links.get("page"):
        lines += [f"Approvals page: {notification.links['page']}", ""]
    lines += [
        "--",
        f"Incident {notification.incident_id} · severity {notification.severity} · tier {notification.tier}",
    ]
    return "\n".join(lines) + "\n"


def email_message(notification: Notification, sender: str, to: list[tuple[str, str]]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(formataddr(pair) for pair in to)
    message["Subject"] = email_subject(notification)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="opswarm")
    # Every message about one decision references the same id, so mail clients thread the reminders together.
    thread = hashlib.sha256(notification.dedup_key.encode()).hexdigest()[:32]
    message["References"] = f"<{thread}@opswarm>"
    message["X-Opswarm-Incident"] = notification.incident_id
    message.set_content(email_body(notification))
    return message


def _smtp_failure(exc: aiosmtplib.SMTPException) -> DeliveryFailure:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        words = "; ".join(f"{refused.recipient}: {refused.code} {refused.message}" for refused in exc.recipients)
        return DeliveryFailure(f"recipients refused: {words}", permanent=all(code >= 500 for code in codes))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryFailure(f"SMTP {exc.code}: {exc.message}", permanent=exc.code >= 500)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return DeliveryFailure(f"SMTP server does not support it: {exc}", permanent=True)
    return DeliveryFailure(f"SMTP: {type(exc).__name__}: {exc}", permanent=False)


class EmailChannel:
    def __init__(self, name: str, config: EmailChannelConfig) -> None:
        self.name = name
        self._config = config

    async def send(self, notification: Notification) -> DeliveryResult:
        to = email_recipients(notification.recipients)
        if not to:
            return DeliveryResult(
                channel=self.name, status="failed", attempts=0,
                error=f"no recipients: none of {len(notification.recipients)} is an e-mail address",
            )  # fmt: skip
        message = email_message(notification, self._config.sender, to)
        password = self._config.password.get_secret_value() if self._config.password else None
        config = self._config

        async def attempt() -> dict[str, Any]:
            try:
                refused, reply = await aiosmtplib.send(
                    message, hostname=config.host, port=config.port, start_tls=config.starttls,
                    username=config.username, password=password, timeout=config.retry.timeout_s,
                )  # fmt: skip
            except aiosmtplib.SMTPException as exc:
                raise _smtp_failure(exc) from exc
            return {
                "message_id": message["Message-ID"],
                "recipients": [address for _, address in to],
                "refused": {address: f"{response.code} {response.message}" for address, response in refused.items()},
                "response": reply,
            }

        return await with_retries(self.name, config.retry, attempt, secrets=(password,) if password else ())
