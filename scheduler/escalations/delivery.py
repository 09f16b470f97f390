"""Delivering notifications: bounded attempts with backoff, every channel at once, and the channel for a config.

`with_retries` runs one channel's attempt under the policy's timeout and retries what may pass (timeouts, lost
connections, HTTP 5xx/408/429) with exponential backoff; what will not pass (any other HTTP 4xx, a refused
recipient) stops at once. Either way the caller gets a `DeliveryResult`, never an exception. `deliver_all` sends
one notification through several channels concurrently; a channel failing, even by raising, never touches the
others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from scheduler.escalations.notifications import (
    Channel,
    ChannelConfig,
    DeliveryResult,
    EmailChannelConfig,
    Notification,
    PagerDutyChannelConfig,
    RetryPolicy,
    SlackChannelConfig,
    WebhookChannelConfig,
)

log = logging.getLogger(__name__)

# HTTP statuses worth another attempt: the request timed out, too many requests, and every server error.
TRANSIENT_HTTP_STATUSES = frozenset({408, 429})
_BODY_EXCERPT_CHARS = 200
_REDACTED = "[redacted]"


class DeliveryFailure(Exception):
    """One failed attempt, as a channel reports it: in words, whether retrying is pointless, and any hint."""

    def __init__(self, words: str, *, permanent: bool, retry_after_s: float | None = None) -> None:
        super().__init__(words)
        self.words = words
        self.permanent = permanent
        self.retry_after_s = retry_after_s


def is_permanent_status(status: int) -> bool:
    """A 4xx other than 408/429: the same request will be refused again."""
    return 400 <= status < 500 and status not in TRANSIENT_HTTP_STATUSES


def backoff_delays(policy: RetryPolicy) -> list[float]:
    """The waits between attempts: backoff_s, then ×factor each time, each at most max_backoff_s."""
    return [min(policy.backoff_s * policy.factor**n, policy.max_backoff_s) for n in range(policy.attempts - 1)]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # absent, or an HTTP date: the policy's backoff decides


def check_response(response: httpx.Response) -> None:
    """Raise a `DeliveryFailure` for a non-2xx response (permanent or not, with the receiver's words)."""
    if response.is_success:
        return
    excerpt = " ".join(response.text.split())[:_BODY_EXCERPT_CHARS]
    raise DeliveryFailure(
        f"HTTP {response.status_code}: {excerpt}" if excerpt else f"HTTP {response.status_code}",
        permanent=is_permanent_status(response.status_code),
        retry_after_s=_retry_after(response),
    )


def _classify(exc: Exception, timeout_s: float) -> DeliveryFailure:
    if isinstance(exc, DeliveryFailure):
        return exc
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return DeliveryFailure(f"timed out after {timeout_s:g}s", permanent=False)
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return DeliveryFailure(f"HTTP {status}", permanent=is_permanent_status(status))
    if isinstance(exc, httpx.TransportError | OSError):
        words = str(exc) or type(exc).__name__
        return DeliveryFailure(f"connection failed: {type(exc).__name__}: {words}", permanent=False)
    # A bug or something unforeseen: trying the same thing again will not help.
    return DeliveryFailure(f"unexpected error: {type(exc).__name__}: {exc}", permanent=True)


def _redact(words: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            words = words.replace(secret, _REDACTED)
    return words


async def with_retries(
    name: str,
    policy: RetryPolicy,
    attempt: Callable[[], Awaitable[dict[str, Any]]],
    *,
    secrets: Sequence[str] = (),
) -> DeliveryResult:
    """Run `attempt` until it returns (its dict is the result's detail), a failure is permanent, or the policy's
    attempts are spent. Each attempt is bounded by `policy.timeout_s`; `secrets` are scrubbed from errors."""
    delays = backoff_delays(policy)
    failure = DeliveryFailure("no attempt made", permanent=True)
    for number in range(1, policy.attempts + 1):
        try:
            async with asyncio.timeout(policy.timeout_s):
                detail = await attempt()
            return DeliveryResult(channel=name, status="delivered", attempts=number, detail=dict(detail))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a result; classified below
            failure = _classify(exc, policy.timeout_s)
        error = _redact(failure.words, secrets)
        last = failure.permanent or number == policy.attempts
        log.warning(
            "delivery attempt failed",
            extra={
                "channel": name, "attempt": number, "attempts": policy.attempts, "error": error,
                "permanent": failure.permanent, "giving_up": last,
            },
        )  # fmt: skip
        if last:
            return DeliveryResult(channel=name, status="failed", attempts=number, error=error)
        delay = delays[number - 1]
        if failure.retry_after_s is not None:
            delay = max(delay, min(failure.retry_after_s, policy.max_backoff_s))
        await asyncio.sleep(delay)
    raise AssertionError("unreachable: the loop returns on its last attempt")


async def _send_one(channel: Channel, notification: Notification, timeout_s: float | None) -> DeliveryResult:
    name = getattr(channel, "name", type(channel).__name__)
    try:
        async with asyncio.timeout(timeout_s):
            return await channel.send(notification)
    except TimeoutError as exc:
        error = f"no result within {timeout_s:g}s" if timeout_s is not None else f"timed out: {exc}"
    except Exception as exc:  # noqa: BLE001 - a broken channel must not take the others down
        error = f"unexpected error: {type(exc).__name__}: {exc}"
    log.error("channel failed unexpectedly", extra={"channel": name, "error": error})
    return DeliveryResult(channel=name, status="failed", attempts=1, error=error)


async def deliver_all(
    channels: Sequence[Channel], notification: Notification, *, timeout_s: float | None = None
) -> list[DeliveryResult]:
    """Send `notification` through every channel concurrently; one result per channel, in the channels' order.
    `timeout_s`, when given, bounds each channel as a whole (its retries included)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_send_one(channel, notification, timeout_s)) for channel in channels]
    return [task.result() for task in tasks]


def open_channel(name: str, config: ChannelConfig, *, http: httpx.AsyncClient) -> Channel:
    """The client for `config`, named `name` in its results. HTTP channels share `http` (the caller closes it)."""
    # Imported here: every channel module builds on this one's retries.
    from scheduler.escalations.email_channel import EmailChannel
    from scheduler.escalations.pagerduty_channel import PagerDutyChannel
    from scheduler.escalations.slack_channel import SlackChannel
    from scheduler.escalations.webhook_channel import WebhookChannel

    match config:
        case SlackChannelConfig():
            return SlackChannel(name, config, http=http)
        case WebhookChannelConfig():
            return WebhookChannel(name, config, http=http)
        case EmailChannelConfig():
            return EmailChannel(name, config)
        case PagerDutyChannelConfig():
            return PagerDutyChannel(name, config, http=http)
    raise ValueError(f"unknown channel config: {type(config).__name__}")
