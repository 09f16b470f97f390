"""Slack through an incoming webhook: a Block Kit message with the question, the brief and buttons to answer.

The webhook URL is the secret (whoever has it can post), so it is never logged nor put in an error. The text of a
notification is untrusted (it quotes alerts and logs): `&`, `<` and `>` are escaped as Slack requires, so nothing
in it can become a mention (`<!channel>`), a link or markup. Slack answers 200 "ok"; its 4xx (invalid_payload,
no_service, channel_is_archived...) are permanent, 429 and 5xx are retried.
"""

from __future__ import annotations

from typing import Any

import httpx

from scheduler.escalations.delivery import check_response, with_retries
from scheduler.escalations.notifications import DeliveryResult, Notification, SlackChannelConfig

# Block Kit's limits: a header's plain text, a section's text, a button's label.
HEADER_MAX_CHARS = 150
SECTION_MAX_CHARS = 3000
FALLBACK_MAX_CHARS = 4000

# The answers a notification may carry, in the order its buttons are shown.
BUTTONS = (("approve", "Approve", "primary"), ("reject", "Reject", "danger"), ("page", "Open approvals page", None))


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters as entities; `&` first so the others are not escaped twice."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, an ellipsis marking the cut, never half an entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def escaped(text: str, limit: int) -> str:
    return _cut(escape_mrkdwn(text), limit)


def _headline(notification: Notification) -> str:
    if notification.kind == "resolved":
        return f"Resolved: {notification.title}"
    if notification.reminder:
        return f"Reminder {notification.reminder}: {notification.title}"
    return notification.title


def slack_message(notification: Notification) -> dict[str, Any]:
    """The webhook's JSON body: fallback `text` (notifications, old clients) and the Block Kit `blocks`."""
    headline = " ".join(_headline(notification).split())
    facts = [
        f"*Incident* {escape_mrkdwn(notification.incident_id)}",
        f"*Severity* {escape_mrkdwn(notification.severity)}",
        f"*Tier* {escape_mrkdwn(notification.tier)}",
    ]
    if notification.recipients:
        facts.append(f"*For* {escape_mrkdwn(', '.join(notification.recipients))}")
    if notification.reminder and notification.kind == "new":
        facts.append(f"*Reminder* {notification.reminder}: still waiting for an answer")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, HEADER_MAX_CHARS), "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": escaped(notification.text or "-", SECTION_MAX_CHARS)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(" · ".join(facts), SECTION_MAX_CHARS)}]},
    ]
    buttons = [
        {
            "type": "button", "action_id": f"opswarm_{key}", "url": notification.links[key],
            "text": {"type": "plain_text", "text": label}, **({"style": style} if style else {}),
        }  # fmt: skip
        for key, label, style in BUTTONS
        if notification.links.get(key) and (notification.kind == "new" or key == "page")
    ]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return {"text": escaped(headline, FALLBACK_MAX_CHARS), "blocks": blocks}


class SlackChannel:
    def __init__(self, name: str, config: SlackChannelConfig, *, http: httpx.AsyncClient) -> None:
        self.name = name
        self._config = config
        self._http = http

    async def send(self, notification: Notification) -> DeliveryResult:
        url = self._config.webhook_url.get_secret_value()
        body = slack_message(notification)

        async def attempt() -> dict[str, Any]:
            response = await self._http.post(url, json=body, timeout=self._config.retry.timeout_s)
            check_response(response)
            return {"http_status": response.status_code, "response": response.text[:200]}

        return await with_retries(self.name, self._config.retry, attempt, secrets=(url,))
