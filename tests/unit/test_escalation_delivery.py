"""The pure parts of the escalation channels: backoff, failure classes, signatures, severities, Slack escaping,
e-mail and PagerDuty formats; and `with_retries` / `deliver_all` driven by in-process attempts and channels."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any

import pytest

from scheduler.escalations.delivery import (
    DeliveryFailure,
    backoff_delays,
    deliver_all,
    is_permanent_status,
    with_retries,
)
from scheduler.escalations.email_channel import email_body, email_recipients, email_subject
from scheduler.escalations.notifications import DeliveryResult, Notification, RetryPolicy
from scheduler.escalations.pagerduty_channel import pagerduty_event, pagerduty_severity
from scheduler.escalations.slack_channel import escape_mrkdwn, escaped, slack_message
from scheduler.escalations.webhook_channel import sign, signed_request, verify_signature

SECRET = "s3cret"
NOW = 1_700_000_000


def notification(**overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "incident_id": "inc-1", "action_id": "act-1", "tier": "primary", "recipients": ("a@example.com",),
        "title": "Approve restart?", "text": "why", "severity": "critical",
        "links": {"approve": "https://x/approve", "reject": "https://x/reject", "page": "https://x/page"},
    }  # fmt: skip
    return Notification(**{**fields, **overrides})


# Backoff and failure classes


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (RetryPolicy(attempts=1), []),
        (RetryPolicy(attempts=3, backoff_s=0.5, factor=2), [0.5, 1.0]),
        (RetryPolicy(attempts=5, backoff_s=1, factor=3, max_backoff_s=10), [1, 3, 9, 10]),
        (RetryPolicy(attempts=4, backoff_s=2, factor=1), [2, 2, 2]),
        (RetryPolicy(attempts=3, backoff_s=0), [0, 0]),
    ],
)
def test_backoff_schedule(policy: RetryPolicy, delays: list[float]) -> None:
    assert backoff_delays(policy) == pytest.approx(delays)


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (403, True), (404, True), (410, True), (422, True), (408, False), (429, False),
     (500, False), (502, False), (503, False), (504, False)],
)  # fmt: skip
def test_permanent_statuses(status: int, permanent: bool) -> None:
    assert is_permanent_status(status) is permanent


# with_retries


class Script:
    """An attempt that raises the scripted exceptions in order, then returns its detail."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"ok": True}


TINY = RetryPolicy(attempts=3, backoff_s=0.001, max_backoff_s=0.01, timeout_s=1)


async def test_transient_failures_are_retried_until_delivered() -> None:
    attempt = Script(DeliveryFailure("HTTP 503", permanent=False), ConnectionResetError("reset by peer"))
    result = await with_retries("c", TINY, attempt)
    assert result == DeliveryResult(channel="c", status="delivered", attempts=3, detail={"ok": True})


async def test_a_permanent_failure_stops_at_once() -> None:
    attempt = Script(DeliveryFailure("HTTP 400: bad", permanent=True))
    result = await with_retries("c", TINY, attempt)
    assert (result.status, result.attempts, result.error, attempt.calls) == ("failed", 1, "HTTP 400: bad", 1)


async def test_an_unexpected_exception_is_a_failed_result_not_retried() -> None:
    attempt = Script(KeyError("links"))
    result = await with_retries("c", TINY, attempt)
    assert (result.status, result.attempts, result.error) == ("failed", 1, "unexpected error: KeyError: 'links'")


async def test_the_last_error_is_reported_after_all_attempts() -> None:
    attempt = Script(*[DeliveryFailure(f"HTTP 50{n}", permanent=False) for n in range(5)])
    result = await with_retries("c", TINY, attempt)
    assert (result.status, result.attempts, result.error, attempt.calls) == ("failed", 3, "HTTP 502", 3)


async def test_each_attempt_is_bounded_by_the_timeout() -> None:
    never = asyncio.Event()

    async def hangs() -> dict[str, Any]:
        await never.wait()
        return {}

    policy = RetryPolicy(attempts=2, backoff_s=0, timeout_s=0.05)
    result = await with_retries("c", policy, hangs)
    assert (result.status, result.attempts, result.error) == ("failed", 2, "timed out after 0.05s")


async def test_failed_attempts_are_logged_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="scheduler.escalations.delivery")
    attempt = Script(*[DeliveryFailure(f"refused key {SECRET}", permanent=False)] * 2)
    result = await with_retries("c", RetryPolicy(attempts=2, backoff_s=0), attempt, secrets=(SECRET,))
    assert result.error == "refused key [redacted]"
    records = [r for r in caplog.records if r.name == "scheduler.escalations.delivery"]
    assert [(r.getMessage(), r.attempt, r.giving_up) for r in records] == [
        ("delivery attempt failed", 1, False), ("delivery attempt failed", 2, True),
    ]  # fmt: skip
    assert all(SECRET not in repr(vars(r)) for r in records)


async def test_retry_after_is_honoured_within_the_cap() -> None:
    loop = asyncio.get_running_loop()
    attempt = Script(DeliveryFailure("HTTP 429", permanent=False, retry_after_s=0.2))
    policy = RetryPolicy(attempts=2, backoff_s=0, max_backoff_s=0.1)
    started = loop.time()
    assert (await with_retries("c", policy, attempt)).status == "delivered"
    assert 0.09 <= loop.time() - started < 0.5  # waited the cap, not zero and not the 0.2 asked


# deliver_all


class Fixed:
    def __init__(self, name: str, outcome: DeliveryResult | BaseException, delay: float = 0) -> None:
        self.name, self.outcome, self.delay = name, outcome, delay

    async def send(self, notification: Notification) -> DeliveryResult:
        await asyncio.sleep(self.delay)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


async def test_deliver_all_keeps_order_and_isolates_failures() -> None:
    ok = DeliveryResult(channel="a", status="delivered", attempts=1)
    channels = [Fixed("a", ok, delay=0.02), Fixed("b", ValueError("boom")), Fixed("c", ok), Fixed("d", ok, delay=5)]
    results = await deliver_all(channels, notification(), timeout_s=0.2)
    assert [r.status for r in results] == ["delivered", "failed", "delivered", "failed"]
    assert results[1] == DeliveryResult("b", "failed", attempts=1, error="unexpected error: ValueError: boom")
    assert results[3].error == "no result within 0.2s"


# Webhook signatures


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, b"{}") == f"sha256={expected}"


BODY = b'{"type":"opswarm.approval_requested"}'
GOOD = sign(SECRET, NOW, BODY)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "header", "now", "valid"),
    [
        (SECRET, str(NOW), BODY, GOOD, NOW, True),
        (SECRET, NOW, BODY.decode(), GOOD, NOW + 299, True),
        (SECRET, str(NOW), BODY + b" ", GOOD, NOW, False),
        ("other", str(NOW), BODY, GOOD, NOW, False),
        (SECRET, str(NOW + 1), BODY, GOOD, NOW, False),
        (SECRET, str(NOW), BODY, GOOD, NOW + 301, False),
        (SECRET, str(NOW), BODY, GOOD, NOW - 301, False),
        (SECRET, str(NOW), BODY, GOOD.removeprefix("sha256="), NOW, False),
        (SECRET, str(NOW), BODY, GOOD.upper(), NOW, False),
        (SECRET, "yesterday", BODY, GOOD, NOW, False),
        (SECRET, None, BODY, GOOD, NOW, False),
        (SECRET, str(NOW), BODY, None, NOW, False),
        ("", str(NOW), BODY, sign("", NOW, BODY), NOW, False),
    ],
)
def test_verify_signature(secret: str, timestamp: Any, body: Any, header: Any, now: int, valid: bool) -> None:
    assert verify_signature(secret, timestamp, body, header, now=now) is valid


def test_signed_request_verifies_and_carries_the_fields() -> None:
    body, headers = signed_request(SECRET, notification(kind="resolved", reminder=2), NOW)
    assert verify_signature(SECRET, headers["X-Opswarm-Timestamp"], body, headers["X-Opswarm-Signature"], now=NOW)
    payload = json.loads(body)
    assert payload["type"] == "opswarm.approval_resolved" and payload["reminder"] == 2
    assert payload["sent_at"] == "2023-11-14T22:13:20+00:00" and payload["dedup_key"] == "opswarm/inc-1/act-1"


# PagerDuty


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("critical", "critical"), ("high", "error"), ("warning", "warning"), ("info", "info"), ("HIGH", "error"),
     ("unheard-of", "error")],
)  # fmt: skip
def test_severity_mapping(ours: str, theirs: str) -> None:
    assert pagerduty_severity(ours) == theirs


def test_pagerduty_events() -> None:
    trigger = pagerduty_event(notification(title="t" * 1500, reminder=3, severity="warning"), "key")
    assert (trigger["event_action"], trigger["payload"]["severity"]) == ("trigger", "warning")
    assert len(trigger["payload"]["summary"]) == 1024 and trigger["payload"]["summary"].startswith("[reminder 3] ttt")
    assert [link["text"] for link in trigger["links"]] == ["Approve", "Reject", "Approvals page"]
    resolve = pagerduty_event(notification(kind="resolved", action_id=None), "key")
    assert resolve == {"routing_key": "key", "event_action": "resolve", "dedup_key": "opswarm/inc-1/none"}


# Slack


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("plain", "plain"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt; already", "&amp;lt; already"),
        ("<!channel> <@U123> <https://evil|click>", "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil|click&gt;"),
        ("*bold* _it_ `code`", "*bold* _it_ `code`"),
    ],
)
def test_slack_escaping(raw: str, safe: str) -> None:
    assert escape_mrkdwn(raw) == safe


def test_slack_cut_never_splits_an_entity() -> None:
    cut = escaped("a" * 7 + "<b", 10)  # "aaaaaaa&lt;b": the cut falls inside "&lt;"
    assert cut == "aaaaaaa…"
    assert escaped("x" * 5000, 3000) == "x" * 2999 + "…"


def test_slack_message_for_a_new_question_and_a_resolution() -> None:
    asked = slack_message(notification(text="a <b> & c", reminder=1))
    header, section, _, actions = asked["blocks"]
    assert header["text"]["text"] == "Reminder 1: Approve restart?"
    assert section["text"]["text"] == "a &lt;b&gt; &amp; c"
    assert [e["style"] for e in actions["elements"][:2]] == ["primary", "danger"]
    assert slack_message(notification(kind="resolved", links={}))["text"] == "Resolved: Approve restart?"
    resolved = slack_message(notification(kind="resolved"))["blocks"]
    assert resolved[0]["text"]["text"] == "Resolved: Approve restart?"
    assert [button["url"] for button in resolved[-1]["elements"]] == ["https://x/page"]  # no answering any more


# E-mail


def test_email_recipients_keep_only_addresses() -> None:
    recipients = ("a@example.com", "Bob <b@example.com>", "@carol", "dave", "A@example.com", "x@y@z")
    assert email_recipients(recipients) == [("", "a@example.com"), ("Bob", "b@example.com")]


@pytest.mark.parametrize(
    ("overrides", "subject"),
    [
        ({}, "Approve restart?"),
        ({"reminder": 2}, "[reminder 2] Approve restart?"),
        ({"kind": "resolved"}, "[resolved] Approve restart?"),
        ({"title": "two\r\nlines"}, "two lines"),
    ],
)
def test_email_subject(overrides: dict[str, Any], subject: str) -> None:
    assert email_subject(notification(**overrides)) == subject


def test_email_body_has_the_text_and_the_links() -> None:
    body = email_body(notification(text="the brief"))
    assert body.startswith("the brief\n\n")
    assert "Approve: https://x/approve\nReject: https://x/reject\nApprovals page: https://x/page\n" in body
    assert "Approve:" not in email_body(notification(kind="resolved"))
