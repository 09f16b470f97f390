"""A generic JSON webhook, signed so that its receiver can tell it comes from us and is fresh.

Every request carries `X-Opswarm-Timestamp: <unix seconds>` and
`X-Opswarm-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, computed over the exact bytes sent.
A receiver checks both with `verify_signature`: a replayed request is refused once its timestamp is older than
`max_age_s`, and `dedup_key` lets it drop the retries it already has. Each attempt is signed anew.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from scheduler.escalations.delivery import check_response, with_retries
from scheduler.escalations.notifications import DeliveryResult, Notification, WebhookChannelConfig

TIMESTAMP_HEADER = "X-Opswarm-Timestamp"
SIGNATURE_HEADER = "X-Opswarm-Signature"
SIGNATURE_PREFIX = "sha256="
DEFAULT_MAX_AGE_S = 300

EVENT_TYPES = {"new": "opswarm.approval_requested", "resolved": "opswarm.approval_resolved"}


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: int | str, body: str | bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(_bytes(secret), _bytes(str(timestamp)) + b"." + _bytes(body), hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str | int | None,
    body: str | bytes,
    header: str | None,
    *,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    now: float | None = None,
) -> bool:
    """Whether `header` signs `body` at `timestamp` under `secret`, and the timestamp is within `max_age_s` of
    `now` (either side: a clock ahead is as suspicious as a replay). Constant-time comparison."""
    if not header or timestamp is None or not secret:
        return False
    try:
        sent_at = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > max_age_s:
        return False
    return hmac.compare_digest(_bytes(sign(secret, sent_at, body)), _bytes(header.strip()))


def webhook_payload(notification: Notification, sent_at: datetime) -> dict[str, Any]:
    return {
        "type": EVENT_TYPES[notification.kind],
        "incident_id": notification.incident_id,
        "action_id": notification.action_id,
        "tier": notification.tier,
        "recipients": list(notification.recipients),
        "title": notification.title,
        "text": notification.text,
        "severity": notification.severity,
        "links": dict(notification.links),
        "reminder": notification.reminder,
        "dedup_key": notification.dedup_key,
        "sent_at": sent_at.isoformat(),
    }


def signed_request(secret: str, notification: Notification, now: float) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt made at `now`."""
    timestamp = int(now)
    payload = webhook_payload(notification, datetime.fromtimestamp(now, UTC))
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    return body, headers


class WebhookChannel:
    def __init__(self, name: str, config: WebhookChannelConfig, *, http: httpx.AsyncClient) -> None:
        self.name = name
        self._config = config
        self._http = http

    async def send(self, notification: Notification) -> DeliveryResult:
        secret = self._config.secret.get_secret_value()

        async def attempt() -> dict[str, Any]:
            body, headers = signed_request(secret, notification, time.time())
            response = await self._http.post(
                self._config.url, content=body, headers=headers, timeout=self._config.retry.timeout_s
            )
            check_response(response)
            return {"http_status": response.status_code}

        return await with_retries(self.name, self._config.retry, attempt, secrets=(secret,))
