"""Correlation outcomes become the right incident events, caused by the alert."""

from __future__ import annotations

import pytest

from bus.events import AlertReceived, AlertsTriaged, IncidentOpened, IncidentResolved, IncidentUpdated, StormMembers
from scheduler.alert_correlation import CorrelationOutcome
from scheduler.incident_events import MAX_ALERT_REFS, TriagedAlert, batch_events, incident_events

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


def _item(offset: int, kind: str, effect: str, incident: str | None = "inc-1", **extra: object) -> TriagedAlert:
    outcome = CorrelationOutcome(kind=kind, effect=effect, incident_id=incident, fingerprint=f"fp{offset}",  # type: ignore[arg-type]
                                 firing=offset, total=offset, **extra)  # type: ignore[arg-type]
    return TriagedAlert(ALERT.model_copy(update={"event_id": f"e{offset}"}), offset, outcome)


def test_a_batch_sums_up_each_incident_and_accounts_for_every_alert() -> None:
    batch = [
        _item(10, "opened", "opened"),
        *[_item(offset, "merged", "alert_added") for offset in range(11, 41)],
        _item(41, "duplicate", "none"),
        _item(42, "suppressed", "none", None, reason="flapping"),
        _item(43, "merged", "alert_resolved"),
        _item(44, "opened", "opened", "inc-2"),
        _item(45, "merged", "resolved", "inc-2"),
    ]
    events = batch_events("opswarm.alerts.v1", 3, batch)
    assert [type(e).__name__ for e in events] == [
        "IncidentOpened", "IncidentUpdated", "IncidentOpened", "IncidentResolved", "AlertsTriaged",
    ]  # fmt: skip
    update = events[1]
    assert isinstance(update, IncidentUpdated)
    assert update.reason == "30 alert(s) joined, 1 alert(s) resolved"
    assert len(update.alerts) == MAX_ALERT_REFS and update.alert_count == 43
    assert update.details["changes"] == {"alert_added": 30, "alert_resolved": 1}
    triaged = events[-1]
    assert isinstance(triaged, AlertsTriaged)
    assert (triaged.source_topic, triaged.source_partition) == ("opswarm.alerts.v1", 3)
    assert [(o.offset, o.kind) for o in triaged.outcomes] == [(i.offset, i.outcome.kind) for i in batch]
    assert triaged.outcomes[-4].reason == "flapping" and triaged.outcomes[0].event_id == "e10"


def test_a_storm_incident_carries_its_member_counts() -> None:
    batch = [
        _item(1, "merged", "alert_added", storm_group="namespace=shop", services=7, storm_started=True),
        _item(2, "merged", "alert_added", storm_group="namespace=shop", services=8),
    ]
    update, triaged = batch_events("alerts", 0, batch)
    assert isinstance(update, IncidentUpdated) and isinstance(triaged, AlertsTriaged)
    assert update.storm == StormMembers(group="namespace=shop", alerts=2, firing=2, services=8)
    assert update.reason.startswith("alert storm in namespace=shop: its services' alerts join this incident")


def test_an_empty_batch_says_nothing() -> None:
    assert batch_events("alerts", 0, []) == []
