"""Incident records on a real MongoDB-wire server: optimistic concurrency, idempotency, refused transitions."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bus.incident_states import IncidentState
from knowledge.incident_store import IncidentRecord, IncidentStore, TimelineEntry

pytestmark = pytest.mark.integration
S = IncidentState




def _record() -> IncidentRecord:
    return IncidentRecord(
        incident_id=f"inc-{uuid.uuid4().hex[:8]}", title="HighErrorRate on checkout", service="checkout",
        severity="critical", fingerprint="f1",
    )  # fmt: skip


async def test_create_then_read_back(incident_store: IncidentStore) -> None:
    record = _record()
    outcome = await incident_store.create(record, event_id="e-open")
    assert outcome.status == "applied"
    back = await incident_store.get(record.incident_id)
    assert back is not None
    assert (back.state, back.version, back.applied_event_ids) == (S.NEW, 1, ["e-open"])
    assert back.opened_at.tzinfo is not None


async def test_opening_twice_with_the_same_event_is_a_duplicate(incident_store: IncidentStore) -> None:
    record = _record()
    await incident_store.create(record, event_id="e-open")
    assert (await incident_store.create(record, event_id="e-open")).status == "duplicate"
    assert (await incident_store.create(record, event_id="e-other")).status == "conflict"


async def test_a_legal_transition_is_applied_with_timeline_and_audit(incident_store: IncidentStore) -> None:
    record = (await incident_store.create(_record(), event_id="e-open")).record
    assert record is not None
    outcome = await incident_store.transition(record, S.DIAGNOSING, event_id="e-2", actor="coordination")
    assert outcome.status == "applied"
    assert outcome.record is not None
    assert outcome.record.state is S.DIAGNOSING and outcome.record.version == 2
    assert outcome.record.timeline[-1].summary == "NEW → DIAGNOSING: diagnosis requested"
    assert outcome.record.audit[-1].action == "transition"


async def test_an_illegal_transition_is_refused_and_recorded(incident_store: IncidentStore) -> None:
    record = (await incident_store.create(_record(), event_id="e-open")).record
    assert record is not None
    outcome = await incident_store.transition(record, S.EXECUTING, event_id="e-bad", actor="coordination")
    assert outcome.status == "refused"
    assert "without a diagnosis" in outcome.reason
    after = await incident_store.get(record.incident_id)
    assert after is not None and after.state is S.NEW
    assert after.audit[-1].action == "transition_refused"
    assert after.audit[-1].detail == {"from": "NEW", "to": "EXECUTING", "reason": outcome.reason}


async def test_the_same_event_applied_twice_changes_nothing(incident_store: IncidentStore) -> None:
    record = (await incident_store.create(_record(), event_id="e-open")).record
    assert record is not None
    first = await incident_store.transition(record, S.DIAGNOSING, event_id="e-2", actor="coordination")
    assert first.record is not None
    again = await incident_store.apply(
        record.incident_id, expected_version=first.record.version, event_id="e-2",
        timeline=[TimelineEntry(kind="note", summary="again", actor="coordination")],
    )  # fmt: skip
    assert again.status == "duplicate"
    after = await incident_store.get(record.incident_id)
    assert after is not None and after.version == 2 and len(after.timeline) == 1


async def test_a_stale_writer_gets_a_conflict(incident_store: IncidentStore) -> None:
    record = (await incident_store.create(_record(), event_id="e-open")).record
    assert record is not None
    await incident_store.transition(record, S.DIAGNOSING, event_id="e-2", actor="coordination")
    stale = await incident_store.transition(record, S.RESOLVED, event_id="e-3", actor="coordination")
    assert stale.status == "conflict"
    assert stale.record is not None and stale.record.state is S.DIAGNOSING


async def test_concurrent_writers_of_one_version_let_exactly_one_through(incident_store: IncidentStore) -> None:
    record = (await incident_store.create(_record(), event_id="e-open")).record
    assert record is not None
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(incident_store.apply(record.incident_id, expected_version=1, event_id=f"e-{i}", fields={"facts": {"w": i}}))
            for i in range(8)
        ]
    statuses = sorted(t.result().status for t in tasks)
    assert statuses == ["applied"] + ["conflict"] * 7
    after = await incident_store.get(record.incident_id)
    assert after is not None and after.version == 2


async def test_list_by_state(incident_store: IncidentStore) -> None:
    a = (await incident_store.create(_record(), event_id="a")).record
    b = (await incident_store.create(_record(), event_id="b")).record
    assert a is not None and b is not None
    await incident_store.transition(a, S.DIAGNOSING, event_id="a2", actor="coordination")
    diagnosing = await incident_store.list(state=S.DIAGNOSING)
    assert [r.incident_id for r in diagnosing] == [a.incident_id]
    assert {r.incident_id for r in await incident_store.list()} == {a.incident_id, b.incident_id}
