"""What a closed incident turns into: the embedded text, the stored payload, its point id."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus.events import AlertRef, IncidentClosed, PlanStep
from knowledge.incident_memory import incident_payload, incident_text, point_id


def _closed(**fields: object) -> IncidentClosed:
    base: dict[str, object] = {
        "produced_by": "tests", "incident_id": "inc-7", "outcome": "remediated", "title": "ServiceDown on checkout",
        "service": "checkout", "kind": "ServiceDown", "severity": "critical", "verified": True,
        "hypothesis": "the process exited after an OOM kill", "summary": "restarted, healthy again",
        "alerts": [
            AlertRef(fingerprint="f1", alertname="ServiceDown", status="firing", labels={"namespace": "prod-eu"}),
            AlertRef(fingerprint="f2", alertname="HighErrorRate", status="firing", labels={"route": "/pay"}),
        ],
        "actions": [
            PlanStep(action="restart_service", target="checkout", params={"grace_s": 5}, timeout_s=20),
            PlanStep(action="restart_service", target="checkout-worker"),
        ],
        "durations_s": {"detect": 3.5, "remediate": 41.0},
        "occurred_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    }  # fmt: skip
    return IncidentClosed.model_validate({**base, **fields})


@pytest.mark.parametrize(
    "part",
    ["ServiceDown on checkout", "kind ServiceDown", "service checkout", "prod-eu", "/pay", "HighErrorRate",
     "the process exited after an OOM kill", "restart_service checkout-worker", "restarted, healthy again"],
)  # fmt: skip
def test_text_names_symptoms_and_what_was_done(part: str) -> None:
    assert part in incident_text(_closed())


@pytest.mark.parametrize("outcome", ["remediated", "failed", "escalated"])
def test_text_does_not_depend_on_how_it_ended(outcome: str) -> None:
    assert incident_text(_closed(outcome=outcome, verified=False)) == incident_text(_closed())


def test_payload_keeps_the_facts() -> None:
    payload = incident_payload(_closed())
    assert payload == {
        "incident_id": "inc-7", "kind": "ServiceDown", "service": "checkout", "severity": "critical",
        "title": "ServiceDown on checkout", "outcome": "remediated", "verified": True,
        "hypothesis": "the process exited after an OOM kill",
        "actions": [
            {"action": "restart_service", "target": "checkout", "params": {"grace_s": 5}},
            {"action": "restart_service", "target": "checkout-worker", "params": {}},
        ],
        "action_names": ["restart_service"], "alertnames": ["HighErrorRate", "ServiceDown"],
        "durations_s": {"detect": 3.5, "remediate": 41.0}, "summary": "restarted, healthy again",
        "closed_at": "2026-03-01T12:00:00+00:00", "closed_event_id": payload["closed_event_id"],
    }  # fmt: skip


def test_payload_needs_an_incident_id() -> None:
    with pytest.raises(ValueError, match="without incident_id"):
        incident_payload(_closed(incident_id=None))


@pytest.mark.parametrize(("a", "b"), [("inc-1", "inc-2"), ("inc-1", "inc-1 "), ("x", "X")])
def test_point_ids_are_per_incident(a: str, b: str) -> None:
    assert point_id(a) == point_id(a)
    assert point_id(a) != point_id(b)
