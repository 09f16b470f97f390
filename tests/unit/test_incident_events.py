"""Correlation outcomes become the right incident events, caused by the alert."""

from __future__ import annotations

import pytest

from bus.events import AlertReceived, IncidentOpened, IncidentResolved, IncidentUpdated
from scheduler.alert_correlation import CorrelationOutcome
from scheduler.incident_events import incident_events

ALERT = AlertReceived(
    produced_by="bridge", status="firing", alertname="HighErrorRate", service="checkout", severity="critical",
    labels={"alertname": "HighErrorRate", "service": "checkout", "namespace": "prod"},
)  # fmt: skip


def _outcome(kind: str, effect: str, incident: str | None = "inc-1") -> CorrelationOutcome:
    return CorrelationOutcome(kind=kind, effect=effect, incident_id=incident, fingerprint="fp", firing=2, total=3)  # type: ignore[arg-type]


def test_an_opened_outcome_opens_the_incident() -> None:
    [event] = incident_events(ALERT, _outcome("opened", "opened"))
    assert isinstance(event, IncidentOpened)
    assert (event.incident_id, event.title, event.severity, event.namespace) == (
        "inc-1", "HighErrorRate on checkout (prod)", "critical", "prod",
    )  # fmt: skip
    assert event.causation_id == ALERT.event_id and event.trace.trace_id == ALERT.trace.trace_id
    assert event.alerts[0].fingerprint == "fp"


@pytest.mark.parametrize(
    ("effect", "reason"),
    [
        ("alert_added", "alert HighErrorRate joined the incident"),
        ("alert_refired", "alert HighErrorRate fired again"),
        ("alert_resolved", "alert HighErrorRate resolved"),
        ("escalated", "alert HighErrorRate raised the severity to critical"),
    ],
)
def test_merges_update_the_incident(effect: str, reason: str) -> None:
    [event] = incident_events(ALERT, _outcome("merged", effect))
    assert isinstance(event, IncidentUpdated)
    assert (event.incident_id, event.reason, event.alert_count) == ("inc-1", reason, 2)
    assert event.severity == ("critical" if effect == "escalated" else None)


def test_the_last_resolve_resolves_the_incident() -> None:
    [event] = incident_events(ALERT, _outcome("merged", "resolved"))
    assert isinstance(event, IncidentResolved)
    assert (event.resolved_by, event.summary) == ("alerts_resolved", "all 3 alerts resolved")


@pytest.mark.parametrize(
    "outcome",
    [_outcome("duplicate", "none"), _outcome("suppressed", "none"), _outcome("suppressed", "none", None)],
)
def test_duplicates_and_suppressed_alerts_say_nothing(outcome: CorrelationOutcome) -> None:
    assert incident_events(ALERT, outcome) == []
