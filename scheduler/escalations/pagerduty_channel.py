"""PagerDuty Events API v2: a new question triggers an alert, its answer (or expiry) resolves it.

Every event about one decision carries the notification's `dedup_key`, so reminders fold into the open alert and
the resolve closes exactly it. PagerDuty answers 202 `{"status": "success", "dedup_key": ...}`; 400 (an invalid
event) is permanent, 429 and 5xx are retried. The routing key is the secret: never logged nor put in an error.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from scheduler.escalations.delivery import check_response, with_retries
from scheduler.escalations.notifications import DeliveryResult, Notification, PagerDutyChannelConfig

PagerDutySeverity = Literal["critical", "error", "warning", "info"]

SUMMARY_MAX_CHARS = 1024
SOURCE = "opswarm"
# Ours (bus.events.Severity) to PagerDuty's; anything unknown pages as an error rather than being played down.
SEVERITIES: dict[str, PagerDutySeverity] = {
    "critical": "critical", "high": "error", "warning": "warning", "info": "info",
}  # fmt: skip
UNKNOWN_SEVERITY: PagerDutySeverity = "error"
LINK_LABELS = (("approve", "Approve"), ("reject", "Reject"), ("page", "Approvals page"))


def pagerduty_severity(severity: str) -> PagerDutySeverity:
    return SEVERITIES.get(severity.strip().lower(), UNKNOWN_SEVERITY)


def _summary(notification: Notification) -> str:
    title = " ".join(notification.title.split())
    summary = f"[reminder {notification.reminder}] {title}" if notification.reminder else title
    return summary if len(summary) <= SUMMARY_MAX_CHARS else summary[: SUMMARY_MAX_CHARS - 1] + "…"


def pagerduty_event(notification: Notification, routing_key: str) -> dict[str, Any]:
    """The event: `trigger` with payload and links for a new question, `resolve` (same dedup_key) otherwise."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger" if notification.kind == "new" else "resolve",
        "dedup_key": notification.dedup_key,
    }
    if notification.kind == "resolved":
        return event  # PagerDuty needs no payload to resolve; the dedup_key names the alert
    event["payload"] = {
        "summary": _summary(notification),
        "source": SOURCE,
        "severity": pagerduty_severity(notification.severity),
        "component": notification.action_id or "incident",
        "group": notification.incident_id,
        "class": "approval_request",
        "custom_details": {
            "incident_id": notification.incident_id,
            "action_id": notification.action_id,
            "tier": notification.tier,
            "recipients": list(notification.recipients),
            "severity": notification.severity,
            "reminder": notification.reminder,
            "brief": notification.text,
        },
    }
    event["links"] = [
        {"href": notification.links[key], "text": label} for key, label in LINK_LABELS if notification.links.get(key)
    ]
    if notification.links.get("page"):
        event["client"], event["client_url"] = "opswarm", notification.links["page"]
    return event


class PagerDutyChannel:
    def __init__(self, name: str, config: PagerDutyChannelConfig, *, http: httpx.AsyncClient) -> None:
        self.name = name
        self._config = config
        self._http = http

    async def send(self, notification: Notification) -> DeliveryResult:
        routing_key = self._config.routing_key.get_secret_value()
        event = pagerduty_event(notification, routing_key)

        async def attempt() -> dict[str, Any]:
            response = await self._http.post(self._config.url, json=event, timeout=self._config.retry.timeout_s)
            check_response(response)
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            answer = answer if isinstance(answer, dict) else {}
            return {
                "http_status": response.status_code,
                "event_action": event["event_action"],
                "dedup_key": answer.get("dedup_key", notification.dedup_key),
                "status": answer.get("status"),
                "message": answer.get("message"),
            }

        return await with_retries(self.name, self._config.retry, attempt, secrets=(routing_key,))
