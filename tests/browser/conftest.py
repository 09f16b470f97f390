"""Fixtures for browser tests: Chromium driven by Playwright, and the knowledge base UI served by uvicorn over a
local Qdrant (hashing embedder), the demo runbooks, one closed incident in the memory and its record in the
stack's MongoDB-wire store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright
from qdrant_client import AsyncQdrantClient

from bus.events import AlertRef, IncidentClosed, PlanStep
from bus.incident_states import IncidentState
from knowledge.dense_embedders import EmbeddingConfig
from knowledge.incident_memory import IncidentMemory
from knowledge.incident_store import AuditEntry, IncidentRecord, IncidentStore, TimelineEntry
from knowledge.knowledge_base import open_knowledge_base
from knowledge.markdown_documents import read_document
from knowledge.text_vectors import HashingEmbedder
from tests.kb_serving import serving
from tests.scratch_incidents import scratch_incident_store

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "deploy" / "demo" / "runbooks"
ARTIFACTS = REPO / ".opswarm" / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@dataclass(frozen=True)
class KbSite:
    """The served UI and what the tests stored behind it."""

    base_url: str
    incident_id: str
    incident_title: str
    timeline: list[str]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (it installs Chromium for the browser tests)",
                    pytrace=False)  # fmt: skip
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=True)
    opened = await context.new_page()
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        await context.close()


@pytest.fixture(scope="module")
async def incident_store(services) -> AsyncIterator[IncidentStore]:  # noqa: ANN001 - tests/conftest.py
    """An incident store in collections of this module's own, dropped afterwards."""
    async with scratch_incident_store(services.mongo_url) as store:
        yield store


@pytest.fixture(scope="module")
async def kb_site(tmp_path_factory: pytest.TempPathFactory, incident_store: IncidentStore) -> AsyncIterator[KbSite]:
    run = uuid.uuid4().hex[:8]
    service, incident_id = f"checkout-{run}", f"inc-{run}"
    closed = closed_incident(incident_id, service)
    record = incident_record(closed)
    outcome = await incident_store.create(record, event_id=f"opened-{run}")
    assert outcome.status == "applied", outcome.reason
    client = AsyncQdrantClient(path=str(tmp_path_factory.mktemp("qdrant")))
    try:
        kb = await open_knowledge_base(client, EmbeddingConfig(backend="hashing"), local=True)
        report = await kb.ingest([read_document(path) for path in sorted(RUNBOOKS.glob("*.md"))])
        assert report.count("added") >= 1 and report.count("failed") == 0, report.line()
        await kb.store_incident(closed)
        memory = IncidentMemory(client, HashingEmbedder())
        await memory.ensure_collection()
        await memory.store(closed)
        async with serving(kb, memory, incident_store) as base_url:
            yield KbSite(base_url, incident_id, closed.title, [entry.summary for entry in record.timeline])
    finally:
        await client.close()


@pytest.fixture
async def broken_site(tmp_path: Path) -> AsyncIterator[str]:
    """The UI over a knowledge base whose Qdrant client is closed: every search fails."""
    client = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
    kb = await open_knowledge_base(client, EmbeddingConfig(backend="hashing"), local=True)
    await client.close()
    async with serving(kb, None, None) as base_url:
        yield base_url


def closed_incident(incident_id: str, service: str) -> IncidentClosed:
    return IncidentClosed(
        produced_by="tests", incident_id=incident_id, outcome="remediated", verified=True, kind="DiskFull",
        title=f"Disk usage high on {service}", service=service, severity="critical",
        hypothesis="old log files filled the data volume",
        alerts=[AlertRef(fingerprint="f", alertname="DiskUsageHigh", status="firing", labels={"service": service})],
        actions=[PlanStep(action="clear_disk", target=service, params={"older_than_s": 3600})],
        durations_s={"remediate": 4.2},
    )  # fmt: skip


def incident_record(closed: IncidentClosed) -> IncidentRecord:
    """The record coordination would have kept for `closed`: a short timeline, its facts and an audit entry."""
    assert closed.incident_id is not None
    opened = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    steps = [
        ("opened", "DiskUsageHigh fired: the data volume is 97% full", "coordination"),
        ("diagnosis", "old log files filled the data volume", "diagnosis"),
        ("action", "clear_disk executed: 2.1 GiB freed", "execution"),
        ("verified", "disk usage back to 41%", "verification"),
        ("state", "closed: remediated and verified", "coordination"),
    ]
    timeline = [TimelineEntry(at=opened + timedelta(seconds=20 * i), kind=kind, summary=summary, actor=actor)
                for i, (kind, summary, actor) in enumerate(steps)]  # fmt: skip
    step = closed.actions[0].model_dump(mode="json")
    return IncidentRecord(
        incident_id=closed.incident_id, title=closed.title, service=closed.service, severity=closed.severity,
        fingerprint="f", state=IncidentState.CLOSED, opened_at=opened, alerts=list(closed.alerts), timeline=timeline,
        facts={"kind": closed.kind, "outcome": closed.outcome, "verified": True,
               "diagnosis": {"hypothesis": closed.hypothesis},
               "actions": [{"action_id": "a-1", "step": step, "status": "executed"}]},
        audit=[AuditEntry(at=opened, actor="coordination", action="transition",
                          detail={"from": "NEW", "to": "DIAGNOSING"})],
    )  # fmt: skip
