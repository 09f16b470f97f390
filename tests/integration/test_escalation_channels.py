"""The escalation channels' real clients against real local receivers on loopback: a FastAPI app under uvicorn
standing in for Slack, a webhook receiver and PagerDuty (it records every request and answers from a script),
and an aiosmtpd SMTP server collecting mail. Nothing of ours is replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from scheduler.escalations.delivery import deliver_all, open_channel
from scheduler.escalations.notifications import (
    DeliveryResult,
    EmailChannelConfig,
    Notification,
    PagerDutyChannelConfig,
    RetryPolicy,
    SlackChannelConfig,
    WebhookChannelConfig,
)
from scheduler.escalations.webhook_channel import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.escalation_receivers import Received, receiver, smtp_server
from tests.services import free_tcp_port

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=3, backoff_s=0.05, factor=2.0, max_backoff_s=1.0, timeout_s=2.0)
SECRET = "whsec-test-0123456789"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
LINKS = {
    "approve": "https://opswarm.example/a/approve?t=tok1",
    "reject": "https://opswarm.example/a/reject?t=tok2",
    "page": "https://opswarm.example/approvals",
}


def notification(**overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "incident_id": "inc-42", "action_id": "act-7", "tier": "on-call",
        "recipients": ("alice@example.com", "Bob <bob@example.com>", "@carol"),
        "title": "Approve rollback_deploy on checkout? CONFIRM 0.48",
        "text": "checkout 5xx at 42%.\nThe log says <script>alert(1)</script> & <!channel>.",
        "severity": "high", "links": dict(LINKS),
    }  # fmt: skip
    return Notification(**{**fields, **overrides})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def email_config(port: int, **overrides: Any) -> EmailChannelConfig:
    fields: dict[str, Any] = {"host": "127.0.0.1", "port": port, "sender": "opswarm@example.com", "starttls": False}
    return EmailChannelConfig(retry=FAST, **{**fields, **overrides})


def slack_config(url: str, retry: RetryPolicy = FAST) -> SlackChannelConfig:
    return SlackChannelConfig(webhook_url=SecretStr(url), retry=retry)


def hook_config(url: str, retry: RetryPolicy = FAST) -> WebhookChannelConfig:
    return WebhookChannelConfig(url=url, secret=SecretStr(SECRET), retry=retry)


def pd_config(url: str, retry: RetryPolicy = FAST) -> PagerDutyChannelConfig:
    return PagerDutyChannelConfig(routing_key=SecretStr(ROUTING_KEY), url=url, retry=retry)


def signed_by_us(request: Received) -> bool:
    timestamp, signature = request.headers[TIMESTAMP_HEADER.lower()], request.headers[SIGNATURE_HEADER.lower()]
    return verify_signature(SECRET, timestamp, request.body, signature)


def assert_delivered(result: DeliveryResult, attempts: int = 1) -> None:
    assert (result.status, result.error, result.attempts) == ("delivered", None, attempts), result


# Slack


async def test_slack_posts_escaped_blocks_with_buttons(http: httpx.AsyncClient) -> None:
    async with receiver() as stub:
        channel = open_channel("slack", slack_config(stub.url("slack")), http=http)
        result = await channel.send(notification(reminder=2))
    assert_delivered(result)
    assert result.detail["response"] == "ok"
    [request] = stub.on("slack")
    body = request.json()
    header, section, context, actions = body["blocks"]
    assert header["text"]["text"] == "Reminder 2: Approve rollback_deploy on checkout? CONFIRM 0.48"
    assert section["text"]["type"] == "mrkdwn"
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;!channel&gt;." in section["text"]["text"]
    assert "<" not in section["text"]["text"] and "<" not in context["elements"][0]["text"]
    assert "*Reminder* 2" in context["elements"][0]["text"]
    assert [(b["text"]["text"], b["url"]) for b in actions["elements"]] == [
        ("Approve", LINKS["approve"]), ("Reject", LINKS["reject"]), ("Open approvals page", LINKS["page"]),
    ]  # fmt: skip
    assert body["text"].startswith("Reminder 2: Approve rollback_deploy")


# Signed webhook


async def test_webhook_body_is_signed_and_verifiable(http: httpx.AsyncClient) -> None:
    async with receiver() as stub:
        result = await open_channel("hook", hook_config(stub.url("hook")), http=http).send(notification())
    assert_delivered(result)
    [request] = stub.on("hook")
    timestamp, signature = request.headers[TIMESTAMP_HEADER.lower()], request.headers[SIGNATURE_HEADER.lower()]
    assert signature.startswith("sha256=") and abs(int(timestamp) - time.time()) < 60
    assert signed_by_us(request)
    assert not verify_signature(SECRET, timestamp, request.body.replace(b"inc-42", b"inc-43"), signature)
    assert not verify_signature("another-secret", timestamp, request.body, signature)
    assert not verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) + 301)
    body = request.json()
    assert body["type"] == "opswarm.approval_requested"
    assert body["dedup_key"] == "opswarm/inc-42/act-7"
    facts = (body["incident_id"], body["action_id"], body["tier"], body["severity"])
    assert facts == ("inc-42", "act-7", "on-call", "high")
    assert body["recipients"] == ["alice@example.com", "Bob <bob@example.com>", "@carol"]
    assert body["links"] == LINKS and body["reminder"] == 0 and "<script>" in body["text"]
    assert set(body) == {
        "type", "incident_id", "action_id", "tier", "recipients", "title", "text", "severity", "links", "reminder",
        "dedup_key", "sent_at",
    }  # fmt: skip


async def test_webhook_retries_transient_failures_with_backoff_then_delivers(http: httpx.AsyncClient) -> None:
    async with receiver() as stub:
        stub.fail(500)
        stub.fail(429, headers={"Retry-After": "0"})
        config = hook_config(stub.url("hook"))
        result = await open_channel("hook", config, http=http).send(notification(kind="resolved"))
    assert_delivered(result, attempts=3)
    first, second, third = stub.on("hook")
    assert second.at - first.at >= 0.05 * 0.9 and third.at - second.at >= 0.1 * 0.9
    for request in (first, second, third):  # each attempt is signed on its own
        assert signed_by_us(request)
    assert third.json()["type"] == "opswarm.approval_resolved"


async def test_webhook_permanent_400_is_not_retried(http: httpx.AsyncClient) -> None:
    async with receiver() as stub:
        stub.fail(400, times=3, body="bad event")
        config = hook_config(stub.url("hook"))
        result = await open_channel("hook", config, http=http).send(notification())
    assert (result.status, result.attempts, result.error) == ("failed", 1, "HTTP 400: bad event")
    assert len(stub.received) == 1


async def test_a_receiver_that_never_answers_hits_the_timeout(http: httpx.AsyncClient) -> None:
    policy = RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=0.3)
    async with receiver() as stub:
        stub.hang(times=2)
        config = hook_config(stub.url("hook"), policy)
        started = time.monotonic()
        result = await open_channel("hook", config, http=http).send(notification())
        elapsed = time.monotonic() - started
    assert (result.status, result.attempts, result.error) == ("failed", 2, "timed out after 0.3s")
    assert 0.6 <= elapsed < 3
    assert len(stub.received) == 2


async def test_a_closed_port_gives_a_failed_result_with_a_clear_error(http: httpx.AsyncClient) -> None:
    config = hook_config(f"http://127.0.0.1:{free_tcp_port()}/hook")
    result = await open_channel("hook", config, http=http).send(notification())
    assert (result.status, result.attempts) == ("failed", 3)
    assert result.error is not None and result.error.startswith("connection failed: ConnectError")


# PagerDuty


async def test_pagerduty_trigger_then_resolve_share_the_dedup_key(http: httpx.AsyncClient) -> None:
    async with receiver() as stub:
        config = pd_config(stub.url("pagerduty"))
        channel = open_channel("pd", config, http=http)
        asked = notification(severity="critical", title="x" * 2000)
        triggered = await channel.send(asked)
        resolved = await channel.send(dataclasses.replace(asked, kind="resolved"))
    assert_delivered(triggered)
    assert_delivered(resolved)
    trigger, resolve = (request.json() for request in stub.on("pagerduty"))
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "opswarm/inc-42/act-7"
    assert triggered.detail["dedup_key"] == resolved.detail["dedup_key"] == "opswarm/inc-42/act-7"
    assert triggered.detail["status"] == "success" and triggered.detail["http_status"] == 202
    assert trigger["routing_key"] == ROUTING_KEY
    payload = trigger["payload"]
    assert (payload["source"], payload["severity"]) == ("opswarm", "critical")
    assert len(payload["summary"]) == 1024 and payload["summary"].endswith("…")
    assert payload["custom_details"]["incident_id"] == "inc-42" and "<script>" in payload["custom_details"]["brief"]
    assert trigger["links"] == [
        {"href": LINKS["approve"], "text": "Approve"}, {"href": LINKS["reject"], "text": "Reject"},
        {"href": LINKS["page"], "text": "Approvals page"},
    ]  # fmt: skip


async def test_pagerduty_severity_is_mapped(http: httpx.AsyncClient) -> None:
    mapping = {"critical": "critical", "high": "error", "warning": "warning", "info": "info"}
    async with receiver() as stub:
        channel = open_channel("pd", pd_config(stub.url("pagerduty")), http=http)
        for ours in mapping:
            assert_delivered(await channel.send(notification(severity=ours)))
    assert [request.json()["payload"]["severity"] for request in stub.on("pagerduty")] == list(mapping.values())


async def test_pagerduty_400_is_permanent_and_429_is_retried(http: httpx.AsyncClient) -> None:
    async with receiver() as stub:
        config = pd_config(stub.url("pagerduty"))
        channel = open_channel("pd", config, http=http)
        stub.fail(429, times=2)
        retried = await channel.send(notification())
        stub.fail(400, times=3, body='{"status":"invalid event","message":"Event object is invalid"}')
        refused = await channel.send(notification())
    assert_delivered(retried, attempts=3)
    assert (refused.status, refused.attempts) == ("failed", 1)
    assert refused.error is not None and refused.error.startswith("HTTP 400: ") and "invalid" in refused.error
    assert len(stub.received) == 4


async def test_secrets_are_neither_logged_nor_in_errors(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scheduler.escalations")
    async with receiver() as stub:
        stub.fail(400, body="echo")  # a receiver echoing the event back, routing key and all
        stub.fail(500, times=3, body="echo")
        results = [
            await open_channel("pd", pd_config(stub.url("pagerduty")), http=http).send(notification()),
            await open_channel("slack", slack_config(stub.url("slack/T000/B000/" + SECRET)), http=http).send(
                notification()
            ),
        ]
    assert [result.status for result in results] == ["failed", "failed"]
    assert "[redacted]" in (results[0].error or "")
    records = [r for r in caplog.records if r.name.startswith("scheduler.escalations")]
    assert len(records) == 4
    for text in [repr(vars(record)) for record in records] + [repr(results)]:
        assert ROUTING_KEY not in text and SECRET not in text


# E-mail


async def test_email_reaches_the_recipients_with_subject_body_and_links(http: httpx.AsyncClient) -> None:
    async with smtp_server() as (handler, port):
        result = await open_channel("mail", email_config(port), http=http).send(notification(reminder=1))
    assert_delivered(result)
    [(sender, recipients, message)] = handler.messages
    assert sender == "opswarm@example.com"
    assert recipients == ["alice@example.com", "bob@example.com"]  # "@carol" is a handle, not an address
    assert result.detail["recipients"] == recipients and result.detail["refused"] == {}
    assert message["Subject"] == "[reminder 1] Approve rollback_deploy on checkout? CONFIRM 0.48"
    assert message["To"] == "alice@example.com, Bob <bob@example.com>"
    assert message["Message-ID"] == result.detail["message_id"]
    body = message.get_body(("plain",)).get_content()
    assert "checkout 5xx at 42%." in body and "<script>alert(1)</script>" in body
    for line in (f"Approve: {LINKS['approve']}", f"Reject: {LINKS['reject']}", f"Approvals page: {LINKS['page']}"):
        assert line in body.splitlines()


async def test_email_without_recipients_is_not_sent(http: httpx.AsyncClient) -> None:
    async with smtp_server() as (handler, port):
        result = await open_channel("mail", email_config(port), http=http).send(
            notification(recipients=("@carol", "dave"))
        )
    assert (result.status, result.attempts) == ("failed", 0)
    assert result.error is not None and result.error.startswith("no recipients")
    assert handler.messages == [] and handler.data_commands == 0


async def test_email_retries_a_busy_server_and_does_not_retry_refused_recipients(http: httpx.AsyncClient) -> None:
    async with smtp_server() as (handler, port):
        channel = open_channel("mail", email_config(port), http=http)
        handler.busy = 2
        retried = await channel.send(notification())
        handler.refuse = {"alice@example.com", "bob@example.com"}
        refused = await channel.send(notification())
    assert_delivered(retried, attempts=3)
    assert len(handler.messages) == 1 and handler.data_commands == 3
    assert (refused.status, refused.attempts) == ("failed", 1)
    assert refused.error is not None and "550" in refused.error and "alice@example.com" in refused.error


async def test_email_server_that_never_greets_hits_the_timeout(http: httpx.AsyncClient) -> None:
    connected = asyncio.Event()
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    policy = RetryPolicy(attempts=1, timeout_s=0.3)
    try:
        config = EmailChannelConfig(host="127.0.0.1", port=port, sender="o@example.com", starttls=False, retry=policy)
        result = await open_channel("mail", config, http=http).send(notification())
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert connected.is_set()
    assert (result.status, result.attempts) == ("failed", 1)
    assert result.error is not None and "timed out" in result.error.lower()


# Every channel at once


class Exploding:
    name = "exploding"

    async def send(self, notification: Notification) -> DeliveryResult:
        raise RuntimeError("channel bug")


async def test_deliver_all_delivers_the_others_when_one_is_broken(http: httpx.AsyncClient) -> None:
    async with receiver() as stub, smtp_server() as (handler, port):
        closed = f"http://127.0.0.1:{free_tcp_port()}/hook"
        channels = [
            open_channel("slack", slack_config(stub.url("slack")), http=http),
            open_channel("dead-hook", hook_config(closed), http=http),
            Exploding(),
            open_channel("mail", email_config(port), http=http),
            open_channel("pd", pd_config(stub.url("pagerduty")), http=http),
        ]  # fmt: skip
        results = await deliver_all(channels, notification())
    assert [(r.channel, r.status) for r in results] == [
        ("slack", "delivered"), ("dead-hook", "failed"), ("exploding", "failed"), ("mail", "delivered"),
        ("pd", "delivered"),
    ]  # fmt: skip
    assert results[1].attempts == 3 and (results[1].error or "").startswith("connection failed")
    assert results[2].error == "unexpected error: RuntimeError: channel bug"
    assert len(stub.on("slack")) == 1 and len(stub.on("pagerduty")) == 1 and len(handler.messages) == 1
