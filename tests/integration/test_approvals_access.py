"""Who may read and answer escalations, over real HTTP, FerretDB (MongoDB wire), Redis and Kafka: API tokens and
their roles, the approvals page's form checks, and signed one-time links (once, never replayed, never expired,
never altered)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from aiokafka import ConsumerRecord
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis

from agents.coordination.approvals_http import approvals_router
from agents.coordination.approvals_page import approvals_page_router
from agents.coordination.incident_flow import CoordinationPolicy, IncidentFlow
from bus import events as ev
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.incident_states import IncidentState
from bus.producer import EventPublisher
from bus.topics import ESCALATIONS
from execution.catalog import default_catalog
from knowledge.incident_store import IncidentStore
from scheduler.arbitration import ActionArbiter, ArbitrationPolicy
from scheduler.escalations.access_tokens import ApiToken, token_sha256
from scheduler.escalations.approval_links import ApprovalLinks
from tests.app_serving import serve_app
from tests.integration.kafka_reading import TopicReader

pytestmark = pytest.mark.integration

TOKENS = {"vera": ("viewer", "vera-token-1"), "alice": ("approver", "alice-token-1"), "root": ("admin", "root-tok")}
API_TOKENS = [ApiToken(name=name, role=role, sha256=token_sha256(plain)) for name, (role, plain) in TOKENS.items()]
LINK_SECRET = SecretStr("a-link-secret-of-the-tests-0123456789")
LINK_TTL_S = 900.0


class FakeClock:
    """Unix time the test moves by hand (links expire by it)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    url: str
    links: ApprovalLinks
    clock: FakeClock
    flow: IncidentFlow
    kafka: KafkaConfig
    store: IncidentStore


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][1]}"}


@pytest.fixture
async def site(
    incident_store: IncidentStore, redis_client: Redis, key_prefix: str, kafka_config: KafkaConfig
) -> AsyncIterator[Site]:
    clock = FakeClock(1_900_000_000.0)
    links = ApprovalLinks(LINK_SECRET, redis_client, prefix=key_prefix, ttl_s=LINK_TTL_S, clock=clock)
    flow = IncidentFlow(incident_store, ActionArbiter(redis_client, key_prefix, ArbitrationPolicy()), default_catalog(),
                        CoordinationPolicy())  # fmt: skip
    async with EventPublisher(kafka_config, client_id=f"approvals-test-{uuid.uuid4().hex[:6]}") as publisher:
        app = FastAPI()
        app.include_router(approvals_router(incident_store, publisher, API_TOKENS))
        app.include_router(approvals_page_router(incident_store, publisher, API_TOKENS, links=links,
                                                 form_secret=LINK_SECRET))  # fmt: skip
        async with serve_app(app) as url:
            yield Site(url, links, clock, flow, kafka_config, incident_store)


async def awaiting(flow: IncidentFlow) -> tuple[str, str]:
    """An incident whose rollback (CONFIRM) awaits a decision; (incident id, pending action id)."""
    service = f"svc-{uuid.uuid4().hex[:6]}"
    alert = ev.AlertRef(fingerprint=uuid.uuid4().hex[:16], alertname="HighErrorRate", status="firing",
                        labels={"alertname": "HighErrorRate", "service": service})  # fmt: skip
    opened = ev.IncidentOpened(
        produced_by="tests", incident_id=f"inc-{uuid.uuid4().hex[:10]}", fingerprint=alert.fingerprint,
        title=f"HighErrorRate on {service}", service=service, severity="critical", alerts=[alert],
    )  # fmt: skip
    await flow.handle(opened)
    plan = ev.RemediationPlan(steps=[ev.PlanStep(action="rollback_deploy", target=service,
                                                 params={"to_version": "v1"})])  # fmt: skip
    outputs = await flow.handle(opened.follow(ev.DiagnosisCompleted, produced_by="diagnosis", confidence=0.9,
                                              hypothesis="a bad deploy", plan=plan, kind="HighErrorRate"))  # fmt: skip
    (ask,) = [e for e in outputs if isinstance(e, ev.EscalationRaised)]
    assert ask.needs_decision and ask.action_id, outputs
    return opened.incident_id or "", ask.action_id


def decisions_of(records: list[ConsumerRecord], incident_id: str) -> list[ev.DecisionRecorded]:
    events = (decode_event(r.value) for r in records)
    return [e for e in events if isinstance(e, ev.DecisionRecorded) and e.incident_id == incident_id]


def escalations(site: Site) -> TopicReader:
    return TopicReader(site.kafka, [site.kafka.topic(ESCALATIONS)])


async def test_the_api_answers_only_known_tokens_and_approvers_decide_as_themselves(site: Site) -> None:
    incident_id, action_id = await awaiting(site.flow)
    async with escalations(site) as reader, httpx.AsyncClient(base_url=site.url, timeout=10) as http:
        nobody = await http.get("/incidents")
        assert nobody.status_code == 401 and "Bearer" in nobody.json()["detail"]
        assert nobody.headers["www-authenticate"] == "Bearer"
        stranger = await http.get("/incidents", headers={"Authorization": "Bearer not-a-token"})
        assert stranger.status_code == 401 and "not one this agent knows" in stranger.json()["detail"]
        assert (await http.post(f"/incidents/{incident_id}/approve", json={})).status_code == 401

        listed = await http.get("/incidents", headers=bearer("vera"))
        assert listed.status_code == 200
        pending = {i["incident_id"]: i["pending"] for i in listed.json()}[incident_id]
        assert pending["action_id"] == action_id and pending["tier"] == "CONFIRM"
        async with httpx.AsyncClient(base_url=site.url, timeout=10, cookies={"opswarm_token": TOKENS["vera"][1]}) as c:
            shown = await c.get(f"/incidents/{incident_id}")
        assert shown.status_code == 200 and shown.json()["state"] == "AWAITING_APPROVAL"
        refused = await http.post(f"/incidents/{incident_id}/approve", headers=bearer("vera"), json={"comment": "x"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == "vera has the viewer role: approving or rejecting needs the approver role"

        stale = await http.post(f"/incidents/{incident_id}/approve", headers=bearer("alice"),
                                json={"action_id": "another-action"})  # fmt: skip
        assert stale.status_code == 409 and "no longer awaits a decision" in stale.json()["detail"]
        body = {"decided_by": "mallory", "comment": "ship it", "action_id": action_id}  # decided_by is ignored
        sent = await http.post(f"/incidents/{incident_id}/approve", headers=bearer("alice"), json=body)
        assert sent.status_code == 202, sent.text
        assert (sent.json()["decided_by"], sent.json()["action_id"]) == ("alice", action_id)
        records = await reader.until(lambda rs: bool(decisions_of(rs, incident_id)))
    (decision,) = decisions_of(records, incident_id)  # the viewer's attempt sent nothing
    assert (decision.decided_by, decision.via, decision.decision) == ("alice", "api", "approve")
    assert (decision.comment, decision.action_id) == ("ship it", action_id)


async def test_with_no_tokens_configured_every_call_is_refused(incident_store: IncidentStore) -> None:
    app = FastAPI()
    app.include_router(approvals_router(incident_store, _NoPublisher(), []))
    app.include_router(approvals_page_router(incident_store, _NoPublisher(), []))
    cookies = {"opswarm_token": TOKENS["root"][1]}
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10, cookies=cookies) as http:
        for response in (
            await http.get("/incidents", headers=bearer("root")),
            await http.post("/incidents/inc-1/reject", headers=bearer("root"), json={}),
        ):
            assert response.status_code == 401
            assert "OPSWARM_API_TOKENS" in response.json()["detail"]
        page = await http.get("/approvals")
        assert page.status_code == 401 and "OPSWARM_API_TOKENS" in page.text and 'id="login"' not in page.text


async def test_the_page_refuses_forms_without_its_csrf_token_or_from_viewers(site: Site) -> None:
    incident_id, action_id = await awaiting(site.flow)
    form = {"decision": "approve", "action_id": action_id, "comment": "go", "csrf": "0" * 64}
    async with httpx.AsyncClient(base_url=site.url, timeout=10) as http:
        login = await http.post("/approvals/login", data={"token": "wrong"})
        assert login.status_code == 401 and "not recognised" in login.text and "set-cookie" not in login.headers
        login = await http.post("/approvals/login", data={"token": TOKENS["alice"][1]})
        assert login.status_code == 303 and login.headers["location"] == "/approvals"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        forged = await http.post(f"/approvals/{incident_id}/decide", data=form)
        assert forged.status_code == 403 and "reload the page" in forged.text
        elsewhere = await http.post(f"/approvals/{incident_id}/decide", data=form,
                                    headers={"Origin": "https://evil.example"})  # fmt: skip
        assert elsewhere.status_code == 403 and "another site" in elsewhere.text
        http.cookies.set("opswarm_token", TOKENS["vera"][1])
        page = await http.get("/approvals")
        assert page.status_code == 200 and f'data-incident-id="{incident_id}"' in page.text
        assert "decide-approve" not in page.text and page.headers["x-frame-options"] == "DENY"
        viewer = await http.post(f"/approvals/{incident_id}/decide", data=form)
        assert viewer.status_code == 403 and "needs the approver role" in viewer.text
    record = await site.store.get(incident_id)
    assert record is not None and record.state is IncidentState.AWAITING_APPROVAL


async def test_the_page_sends_decisions_as_the_signed_in_approver_and_says_what_happened(site: Site) -> None:
    incident_id, action_id = await awaiting(site.flow)
    cookies = {"opswarm_token": TOKENS["alice"][1]}
    async with escalations(site) as reader, httpx.AsyncClient(base_url=site.url, timeout=10, cookies=cookies) as http:
        page = await http.get("/approvals")
        assert page.status_code == 200 and f'data-action-id="{action_id}"' in page.text
        match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
        assert match is not None, page.text
        form = {"decision": "reject", "action_id": action_id, "comment": "not during the sale", "csrf": match[1]}
        sent = await http.post(f"/approvals/{incident_id}/decide", data=form)
        assert sent.status_code == 303 and sent.headers["location"].startswith("/approvals?done=")
        shown = await http.get(sent.headers["location"])
        assert "reject of rollback_deploy on svc-" in shown.text and f"sent for incident {incident_id}" in shown.text
        assert 'data-kind="ok"' in shown.text
        records = await reader.until(lambda rs: bool(decisions_of(rs, incident_id)))

        missing = await http.post("/approvals/inc-missing/decide", data=form)
        shown = await http.get(missing.headers["location"])
        assert 'data-kind="error"' in shown.text and "no incident inc-missing" in shown.text
        forged = sent.headers["location"].replace("done=reject", "done=approve")
        assert 'id="flash"' not in (await http.get(forged)).text  # an unsigned message is not shown
    (decision,) = decisions_of(records, incident_id)
    assert (decision.decided_by, decision.via, decision.decision) == ("alice", "web", "reject")
    assert decision.comment == "not during the sale"


async def test_a_signed_link_decides_once_as_its_recipient(site: Site) -> None:
    incident_id, action_id = await awaiting(site.flow)
    token = site.links.make(incident_id, action_id, "reject", "pat@example.com")
    async with escalations(site) as reader, httpx.AsyncClient(base_url=site.url, timeout=10) as http:
        for _ in range(2):  # looking does not use the link up
            confirm = await http.get(f"/approvals/links/{token}")
            assert confirm.status_code == 200, confirm.text
            assert "pat@example.com" in confirm.text and "Reject rollback_deploy" in confirm.text
            assert confirm.headers["referrer-policy"] == "no-referrer"
        used = await http.post(f"/approvals/links/{token}")
        assert used.status_code == 200 and "Decision sent" in used.text, used.text
        replayed = await http.post(f"/approvals/links/{token}")
        assert replayed.status_code == 410 and "already used" in replayed.text
        assert (await http.get(f"/approvals/links/{token}")).status_code == 410
        records = await reader.until(lambda rs: bool(decisions_of(rs, incident_id)))
    (decision,) = decisions_of(records, incident_id)
    assert (decision.decided_by, decision.via, decision.decision, decision.action_id) == (
        "pat@example.com", "link", "reject", action_id,
    )  # fmt: skip


async def test_expired_and_altered_links_are_refused(site: Site, redis_client: Redis) -> None:
    incident_id, action_id = await awaiting(site.flow)
    expired = site.links.make(incident_id, action_id, "approve", "pat@example.com")
    payload, signature = site.links.make(incident_id, action_id, "approve", "pat@example.com").split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    others = ApprovalLinks(SecretStr("another-secret-entirely-0123"), redis_client, prefix="unused", ttl_s=60,
                           clock=site.clock)  # fmt: skip
    forged = others.make(incident_id, action_id, "approve", "mallory")
    site.clock.now += LINK_TTL_S + 1
    fresh = site.links.make(incident_id, action_id, "approve", "sentinel")
    async with escalations(site) as reader, httpx.AsyncClient(base_url=site.url, timeout=10) as http:
        for method in ("GET", "POST"):
            gone = await http.request(method, f"/approvals/links/{expired}")
            assert gone.status_code == 410 and "expired" in gone.text, gone.text
            for bad in (f"{flipped}.{signature}", forged, f"{payload}.", "nonsense", f"{payload}.{signature}x"):
                refused = await http.request(method, f"/approvals/links/{bad}")
                assert refused.status_code == 403 and "Invalid link" in refused.text, (bad, refused.text)
        assert (await site.links.redeem(expired)).status == "expired"
        # A good link afterwards: its decision is the first and only one on the incident's partition.
        assert (await http.post(f"/approvals/links/{fresh}")).status_code == 200
        records = await reader.until(lambda rs: bool(decisions_of(rs, incident_id)))
    assert [d.decided_by for d in decisions_of(records, incident_id)] == ["sentinel"]


class _NoPublisher:
    async def publish(self, event: ev.Event) -> None:
        raise AssertionError(f"nothing may be published: {event.type}")
