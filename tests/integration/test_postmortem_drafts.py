"""Postmortem drafts on real pieces: autogen's OpenAI client (as `build_model_client` makes it) against the local
OpenAI-compatible stub, a knowledge base in local Qdrant, coordination's records in FerretDB. The model's draft is
stored and found as a postmortem; each failure a server can give falls back to the template with the reason; a
redelivered close pays the model nothing; a knowledge base or record store that fails never fails the close."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from qdrant_client import AsyncQdrantClient, models

from agents.knowledge.service import PostmortemDrafter, answer, draft_closed, opened_stores, postmortem_drafter
from agents.knowledge.settings import KnowledgeSettings
from bus.events import AlertRef, IncidentClosed, KnowledgeQueried, PlanStep
from knowledge.dense_embedders import EmbeddingConfig
from knowledge.incident_store import IncidentRecord, IncidentStore, TimelineEntry
from knowledge.knowledge_base import KnowledgeBase, open_knowledge_base
from knowledge.llm_client import LlmConfig
from knowledge.markdown_documents import parse_document, read_document
from knowledge.postmortem_drafts import SECTIONS, TO_COMPLETE, draft_postmortem, draft_source, draft_stored, is_draft
from tests.llm_stub import llm_stub, stub_config, stub_with_client, text_reply

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

GOOD_REPLY = "\n\n".join(
    f"## {name}\n\nThe checkout process ran out of memory ({name.lower()})." for name in SECTIONS
)


def closed(incident_id: str, outcome: str = "remediated") -> IncidentClosed:
    return IncidentClosed(
        produced_by="tests", incident_id=incident_id, outcome=outcome, verified=outcome == "remediated",  # type: ignore[arg-type]
        kind="ServiceDown", title="ServiceDown on checkout", service="checkout", severity="critical",
        hypothesis="the process exited after an OOM kill",
        alerts=[AlertRef(fingerprint="f", alertname="ServiceDown", status="firing", labels={"service": "checkout"})],
        actions=[PlanStep(action="restart_service", target="checkout")], durations_s={"remediate": 12.5},
    )  # fmt: skip


@pytest.fixture
async def kb(local_qdrant: AsyncQdrantClient) -> KnowledgeBase:
    return await open_knowledge_base(local_qdrant, EmbeddingConfig(backend="hashing"), local=True)


async def stored_text(client: AsyncQdrantClient, source: str) -> str:
    """The stored chunks' text of a document, in order (read from Qdrant, not from the draft)."""
    where = models.Filter(must=[models.FieldCondition(key="source", match=models.MatchValue(value=source))])
    points, _ = await client.scroll("documents", scroll_filter=where, limit=100, with_payload=True)
    return "\n".join(str(p.payload["text"]) for p in sorted(points, key=lambda p: p.payload["index"]))  # type: ignore[index]


async def test_the_models_draft_is_stored_once_and_found_as_a_postmortem(
    kb: KnowledgeBase, local_qdrant: AsyncQdrantClient, incident_store: IncidentStore
) -> None:
    incident_id = f"inc-{uuid.uuid4().hex[:8]}"
    step = TimelineEntry(kind="action", summary="restart_service on checkout succeeded", actor="execution")
    record = IncidentRecord(incident_id=incident_id, title="ServiceDown on checkout", service="checkout",
                            severity="critical", fingerprint="f", timeline=[step])  # fmt: skip
    assert (await incident_store.create(record, event_id="opened")).status == "applied"
    event = closed(incident_id)
    async with stub_with_client() as (stub, client, config):
        stub.reply_text(GOOD_REPLY)
        drafter = PostmortemDrafter(kb, client, config, incident_store)
        result = await draft_closed(drafter, event)
        # A redelivered close finds the draft stored: no second request (the stub would answer 500 to one).
        again = await draft_closed(drafter, event)
    assert result is not None and (result.source, result.outcome) == (draft_source(incident_id), "added")
    assert again is None and await draft_stored(kb, incident_id)
    [request] = stub.requests
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    user = request["messages"][1]["content"]
    assert "restart_service on checkout succeeded" in user  # the record's timeline, fenced
    assert re.search(r"<<<DATA timeline [0-9a-f]{12}>>>\n.*restart_service on checkout succeeded", user, re.DOTALL)

    hits = await kb.search("checkout ran out of memory", 5, filters={"type": "postmortem"})
    assert hits and {h.source for h in hits} == {draft_source(incident_id)}
    assert all(h.title == "Postmortem draft: ServiceDown on checkout" for h in hits)
    assert {h.section.split(" > ")[-1] for h in hits} <= {*SECTIONS, "Postmortem draft: ServiceDown on checkout"}
    text = await stored_text(local_qdrant, draft_source(incident_id))
    assert "by the model stub-llm" in text and "ran out of memory (summary)" in text


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (lambda stub: stub.reply_status(429, headers={"Retry-After": "1"}), "RateLimitError"),
        (lambda stub: stub.reply_status(500), "InternalServerError"),
        (lambda stub: stub.reply_malformed(), "JSONDecodeError"),
        (lambda stub: stub.reply_slow(10, then=text_reply(GOOD_REPLY)), "no reply within 0.5s"),
        (lambda stub: stub.reply_text("It crashed, then it was restarted."), "no '## ' section"),
    ],
    ids=["429", "500", "malformed", "slow", "no-sections"],
)
async def test_a_failing_model_gives_the_template_with_the_reason(
    kb: KnowledgeBase, local_qdrant: AsyncQdrantClient, script: Any, reason: str
) -> None:
    incident_id = f"inc-{uuid.uuid4().hex[:8]}"
    async with stub_with_client(max_wall_s=0.5) as (stub, client, config):
        script(stub)
        started = time.monotonic()
        draft = await draft_postmortem(closed(incident_id, "escalated"), None, client, config)
        elapsed = time.monotonic() - started
    assert elapsed < 3 and len(stub.requests) == 1
    transcript = draft.transcript
    assert draft.method == "template" and transcript is not None
    assert (transcript.status, transcript.model, transcript.model_calls) == ("fallback", "stub-llm", 1)
    assert reason in transcript.reason
    [result] = (await kb.ingest([draft.document()])).results
    assert result.outcome == "added"
    hits = await kb.search("escalated ServiceDown checkout", 3, filters={"type": "postmortem"})
    assert {h.source for h in hits} == {draft_source(incident_id)}
    text = await stored_text(local_qdrant, draft_source(incident_id))
    assert "from the template (the model failed:" in text and reason in text
    assert "The swarm escalated the incident to a human." in text and TO_COMPLETE in text


async def test_without_a_model_the_template_is_stored(kb: KnowledgeBase, local_qdrant: AsyncQdrantClient) -> None:
    incident_id = f"inc-{uuid.uuid4().hex[:8]}"
    drafter = PostmortemDrafter(kb, None, LlmConfig())
    result = await draft_closed(drafter, closed(incident_id))
    assert result is not None and result.outcome == "added"
    text = await stored_text(local_qdrant, draft_source(incident_id))
    assert "written from the template when the incident closed" in text
    assert "The swarm's hypothesis (not confirmed by a human)" in text


async def test_an_unreadable_record_drafts_without_the_timeline(kb: KnowledgeBase) -> None:
    mongo: AsyncMongoClient = AsyncMongoClient("mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=200)
    try:
        incidents = IncidentStore.in_database(mongo["opswarm_tests"], timeout_s=2)
        result = await draft_closed(PostmortemDrafter(kb, None, LlmConfig(), incidents), closed("inc-no-record"))
    finally:
        await mongo.close()
    assert result is not None and result.outcome == "added"


async def test_a_failing_knowledge_base_never_fails_the_close(tmp_path: Path) -> None:
    settings = KnowledgeSettings(
        qdrant_path=str(tmp_path / "qdrant"), qdrant_url=None, embedding=EmbeddingConfig(backend="hashing")
    )
    async with opened_stores(settings) as stores:
        pass  # closed: every call to the stores fails now
    async with stub_with_client() as (stub, client, config):
        assert await draft_closed(PostmortemDrafter(stores.kb, client, config), closed("inc-1")) is None
    assert stub.requests == []  # the stored-draft check failed first: the model was not paid for nothing


async def test_the_drafter_of_the_settings_has_the_configured_model(kb: KnowledgeBase, tmp_path: Path) -> None:
    async with llm_stub() as stub:
        base = {"qdrant_path": str(tmp_path / "unused"), "qdrant_url": None, "llm": stub_config(stub)}
        async with postmortem_drafter(KnowledgeSettings(**base), kb) as drafter:
            assert drafter.model is not None and drafter.llm.base_url == stub.base_url
            stub.reply_text(GOOD_REPLY)
            result = await draft_closed(drafter, closed(f"inc-{uuid.uuid4().hex[:8]}"))
        assert result is not None and len(stub.requests) == 1
        async with postmortem_drafter(KnowledgeSettings(**base, postmortem_drafts=False), kb) as drafter:
            assert drafter.model is None


async def test_knowledge_answers_leave_the_drafts_out_and_keep_reviewed_postmortems(tmp_path: Path) -> None:
    settings = KnowledgeSettings(
        qdrant_path=str(tmp_path / "qdrant"), qdrant_url=None, embedding=EmbeddingConfig(backend="hashing")
    )
    reviewed = parse_document("postmortems/checkout-oom.md", (
        "---\ntype: postmortem\ntitle: Checkout OOM\n---\n# Checkout OOM\n\n## Root cause\n\n"
        "ServiceDown on checkout: the process exited after an OOM kill; the heap limit was raised.\n"
    ))  # fmt: skip
    # The words of the drafts, which the six drafts' chunks match better than the runbook's.
    words = "ServiceDown on checkout: the process exited after an OOM kill"
    query = KnowledgeQueried(produced_by="tests", query=words, k=4)
    async with opened_stores(settings) as stores:
        await stores.kb.ingest([reviewed, read_document(REPO / "deploy" / "demo" / "runbooks" / "service-down.md")])
        drafter = PostmortemDrafter(stores.kb, None, LlmConfig())
        for number in range(6):  # more draft chunks than the answer has places
            assert await draft_closed(drafter, closed(f"inc-{number}")) is not None
        drafts = await stores.kb.search(query.query, 10, filters={"type": "postmortem"})
        answered = await answer(stores, query)
    assert [h for h in drafts if is_draft(h.source)]  # the drafts are there, and found by a search
    sources = [h.source or "" for h in answered.hits if h.type != "incident"]
    assert "postmortems/checkout-oom.md" in sources
    assert any(s.endswith("service-down.md") for s in sources)
    assert not [s for s in sources if is_draft(s)]
