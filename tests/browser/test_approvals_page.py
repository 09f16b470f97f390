"""The approvals page in real Chromium against a real coordination agent (Kafka, Redis, MongoDB wire): an approver
signs in, reads the escalation (risk breakdown, brief, evidence), approves with a comment, and the incident moves
on with the approver's name and comment in its audit; a viewer reads the same page with nothing to press."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Browser, Page
from pydantic import SecretStr
from redis.asyncio import Redis

from agents.coordination.service import run_coordination
from agents.coordination.settings import CoordinationSettings
from bus import events as ev
from bus.admin import delete_namespace, ensure_topics
from bus.config import KafkaConfig
from bus.incident_states import IncidentState
from bus.producer import EventPublisher
from knowledge.incident_store import IncidentRecord, IncidentStore
from scheduler.escalations.access_tokens import ApiToken, token_sha256
from scheduler.heartbeats import HeartbeatRegistry
from tests.browser.conftest import ARTIFACTS
from tests.integration.redis_keys import eventually, keys_under, redis_for

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SCREENSHOT = ARTIFACTS / "approvals.png"
TOKENS = {"alice": ("approver", f"alice-{uuid.uuid4().hex}"), "vera": ("viewer", f"vera-{uuid.uuid4().hex}")}
_STOP_TIMEOUT_S = 30.0
_APPLIED_S = 30.0
SIMILAR = ev.Evidence(
    kind="incident", summary="incident 'checkout 5xx after deploy'", score=0.83,
    data={"title": "checkout 5xx after deploy", "outcome": "remediated", "actions": ["rollback_deploy"]},
)  # fmt: skip
POLICY = """
default:
  name: browser-tests
  tiers:
    - {name: on-call, timeout_s: 3600}
  four_eyes_min_score: null
"""
METRIC = ev.Evidence(kind="metric", summary="5xx ratio 12% since 09:02, 0.1% before", score=0.91)


@dataclass(frozen=True)
class Agent:
    url: str
    kafka: KafkaConfig
    store: IncidentStore


@pytest.fixture(scope="module")
async def agent(
    services, incident_store: IncidentStore, tmp_path_factory: pytest.TempPathFactory  # noqa: ANN001
) -> AsyncIterator[Agent]:
    """A coordination agent in this process on a topic namespace and key prefix of its own, HTTP on a free port.
    Its escalation policy asks one approver whatever the risk (no four-eyes rule), with a window of an hour."""
    run = uuid.uuid4().hex[:8]
    policy = tmp_path_factory.mktemp("escalations") / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    policy.chmod(0o600)
    kafka = KafkaConfig(bootstrap_servers=services.kafka_bootstrap, connect_timeout_s=30,
                        topic_namespace=f"test-{run}")  # fmt: skip
    await ensure_topics(kafka)
    redis: Redis = redis_for(services)
    prefix = f"opswarm-test-{run}"
    settings = CoordinationSettings(
        kafka=kafka, redis_url=SecretStr(services.redis_url), redis_prefix=prefix, instance_id=f"coordination-{run}",
        consumer_group=f"coordination-{run}", heartbeat_every_s=0.2, http_port=0,
        api_tokens=[ApiToken(name=n, role=role, sha256=token_sha256(plain)) for n, (role, plain) in TOKENS.items()],
        link_secret=SecretStr(f"browser-test-link-secret-{run}"), escalation_policy_file=str(policy),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(run_coordination(settings, stop, redis, incident_store))
    heartbeats = HeartbeatRegistry(redis, prefix)
    try:
        await eventually(lambda: _http_port(heartbeats, settings.instance_id, task), 60)
        port = await _http_port(heartbeats, settings.instance_id, task)
        yield Agent(f"http://127.0.0.1:{port}", kafka, incident_store)
    finally:
        stop.set()
        await asyncio.wait_for(task, _STOP_TIMEOUT_S)
        keys = await keys_under(redis, prefix)
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await delete_namespace(kafka)


async def _http_port(heartbeats: HeartbeatRegistry, instance_id: str, task: asyncio.Task) -> int | None:
    if task.done():
        task.result()  # the agent failed: its error fails the test
        raise AssertionError("the coordination agent stopped")
    beat = next((r for r in await heartbeats.live() if r.instance_id == instance_id), None)
    port = beat.details.get("http_port") if beat is not None else None
    return None if port is None else int(port)


async def _record(store: IncidentStore, incident_id: str) -> IncidentRecord:
    record = await store.get(incident_id)
    assert record is not None
    return record


async def _in_state(store: IncidentStore, incident_id: str, wanted: IncidentState | None, *, leave: bool = False):
    """Wait until the incident is in `wanted` (or, with leave, no longer in it)."""

    async def reached() -> bool:
        record = await store.get(incident_id)
        return record is not None and ((record.state is not wanted) if leave else (record.state is wanted))

    try:
        async with asyncio.timeout(_APPLIED_S):
            while not await reached():
                await asyncio.sleep(0.05)  # polling the store: the condition itself is what is awaited
    except TimeoutError:
        record = await store.get(incident_id)
        audit = [] if record is None else [(a.action, a.detail) for a in record.audit]
        seen = "no record" if record is None else f"{record.state}; audit {audit}"
        pytest.fail(f"incident {incident_id} {'still' if leave else 'not'} {wanted} after {_APPLIED_S} s: {seen}")


async def awaiting_approval(agent: Agent) -> tuple[str, str]:
    """An incident driven through Kafka until it awaits a decision on a rollback (CONFIRM); (its id, service)."""
    service = f"checkout-{uuid.uuid4().hex[:6]}"
    alert = ev.AlertRef(fingerprint=uuid.uuid4().hex[:16], alertname="HighErrorRate", status="firing",
                        labels={"alertname": "HighErrorRate", "service": service})  # fmt: skip
    opened = ev.IncidentOpened(
        produced_by="monitoring", incident_id=f"inc-{uuid.uuid4().hex[:10]}", fingerprint=alert.fingerprint,
        title=f"HighErrorRate on {service}", service=service, severity="critical", alerts=[alert],
    )  # fmt: skip
    incident_id = opened.incident_id or ""
    plan = ev.RemediationPlan(steps=[ev.PlanStep(action="rollback_deploy", target=service,
                                                 params={"to_version": "v41"})])  # fmt: skip
    diagnosed = opened.follow(
        ev.DiagnosisCompleted, produced_by="diagnosis", confidence=0.8, kind="HighErrorRate", plan=plan,
        hypothesis="the v42 deploy broke checkout", rationale="Errors began right after the v42 deploy.",
        evidence=[METRIC, SIMILAR],
    )  # fmt: skip
    async with EventPublisher(agent.kafka, client_id=f"browser-test-{uuid.uuid4().hex[:6]}") as publisher:
        await publisher.publish(opened)
        await _in_state(agent.store, incident_id, IncidentState.DIAGNOSING)
        await publisher.publish(diagnosed)
    await _in_state(agent.store, incident_id, IncidentState.AWAITING_APPROVAL)
    return incident_id, service


async def sign_in(browser: Browser, agent: Agent, name: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    response = await page.goto(f"{agent.url}/approvals")
    assert response is not None and response.status == 200
    await page.fill("#token", TOKENS[name][1])
    async with page.expect_navigation():
        await page.click("#sign-in")
    assert page.url == f"{agent.url}/approvals"
    assert f"signed in as {name}" in (await page.locator("#who").inner_text())
    return page


async def test_an_approver_reads_the_escalation_and_approves_it_with_a_comment(browser: Browser, agent: Agent) -> None:
    incident_id, service = await awaiting_approval(agent)
    pending = (await _record(agent.store, incident_id)).facts["actions"][0]
    page = await sign_in(browser, agent, "alice")
    try:
        card = page.locator(f'article.approval[data-incident-id="{incident_id}"]')
        assert await card.count() == 1
        assert await card.locator("h2.title").inner_text() == f"HighErrorRate on {service}"
        assert await card.locator(".pending-action .action").inner_text() == "rollback_deploy"
        assert await card.locator(".pending-action .params").inner_text() == '{"to_version": "v41"}'
        assert await card.locator(".risk .tier").inner_text() == "CONFIRM"
        assert await card.locator(".risk .score").inner_text() == f"{pending['risk']['score']:.2f}"
        rows = await card.locator("table.breakdown tbody tr").all()
        factors = [await row.get_attribute("data-factor") for row in rows]
        assert sorted(factors) == sorted(pending["risk"]["breakdown"])
        assert await card.locator("ul.reasons li").all_inner_texts() == pending["risk"]["reasons"]
        brief = await card.locator("pre.brief").inner_text()
        assert brief == pending["brief"] and brief.startswith(f"Approve rollback_deploy on {service}?")
        assert "Errors began right after the v42 deploy." in await card.locator(".rationale").inner_text()
        kinds = [await row.get_attribute("data-kind") for row in await card.locator("table.evidence tbody tr").all()]
        assert kinds == ["metric", "incident"]
        assert "checkout 5xx after deploy" in await card.locator("ul.similar").inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)

        form = card.locator("form.decide-approve")
        await form.locator("textarea").fill("v41 was clean for a week; go")
        async with page.expect_navigation() as navigation:
            await form.locator("button").click()
        response = await navigation.value
        assert response is not None and response.status == 200
        flash = page.locator("#flash")
        assert await flash.get_attribute("data-kind") == "ok"
        assert await flash.inner_text() == f"approve of rollback_deploy on {service} sent for incident {incident_id}"
    finally:
        await page.context.close()

    await _in_state(agent.store, incident_id, IncidentState.AWAITING_APPROVAL, leave=True)
    record = await _record(agent.store, incident_id)
    decisions = [a for a in record.audit if a.action == "decision"]
    assert [(a.actor, a.detail["by"], a.detail["decision"], a.detail["comment"]) for a in decisions] == [
        ("alice", "alice", "approve", "v41 was clean for a week; go")
    ]
    assert record.state is IncidentState.EXECUTING


async def test_a_viewer_reads_the_escalation_with_no_decision_to_make(browser: Browser, agent: Agent) -> None:
    incident_id, service = await awaiting_approval(agent)
    page = await sign_in(browser, agent, "vera")
    try:
        card = page.locator(f'article.approval[data-incident-id="{incident_id}"]')
        assert await card.count() == 1
        assert await card.locator("pre.brief").inner_text() != ""
        assert await page.locator("form.decide").count() == 0
        assert await page.locator("button.approve, button.reject").count() == 0
        assert "deciding needs the approver role" in await card.locator(".viewer-only").inner_text()
    finally:
        await page.context.close()
    assert (await _record(agent.store, incident_id)).state is IncidentState.AWAITING_APPROVAL
