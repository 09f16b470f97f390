"""What monitoring tells the swarm about alerts: the incident events their correlation outcomes stand for.

For one alert, `incident_events` gives its IncidentOpened, IncidentUpdated or IncidentResolved. For a batch of one
alerts partition, `batch_events` gives, per incident touched, at most an IncidentOpened, one IncidentUpdated that
sums up every change of the batch (a storm incident taking 400 alerts gets one update, not 400) and an
IncidentResolved, in that order; then one AlertsTriaged with every alert record's outcome, for accounting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bus.events import (
    AlertOutcome,
    AlertReceived,
    AlertRef,
    AlertsTriaged,
    Event,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Severity,
    StormMembers,
)
from scheduler.alert_correlation import SEVERITY_RANK, CorrelationOutcome

PRODUCER = "monitoring"
# An update lists at most this many of the alerts that changed (the counts cover them all).
MAX_ALERT_REFS = 20

_UPDATE_REASONS = {
    "alert_added": "alert {alertname} joined the incident",
    "alert_refired": "alert {alertname} fired again",
    "alert_resolved": "alert {alertname} resolved",
    "escalated": "alert {alertname} raised the severity to {severity}",
}
_CHANGE_WORDS = {
    "alert_added": "joined",
    "alert_refired": "fired again",
    "alert_resolved": "resolved",
    "escalated": "raised the severity",
}


@dataclass(frozen=True)
class TriagedAlert:
    """One alert record of a batch with what correlation made of it."""

    alert: AlertReceived
    offset: int
    outcome: CorrelationOutcome


def incident_events(alert: AlertReceived, outcome: CorrelationOutcome) -> list[Event]:
    """IncidentOpened, IncidentUpdated or IncidentResolved for this alert; nothing for duplicates and suppressed."""
    return _IncidentChanges.of([TriagedAlert(alert, 0, outcome)]).events()


def batch_events(topic: str, partition: int, batch: Sequence[TriagedAlert]) -> list[Event]:
    """The incident events of a batch of one partition, then its AlertsTriaged (nothing for an empty batch)."""
    if not batch:
        return []
    # Built without validation (model_construct): every field comes from a validated alert or from correlation,
    # and there is one per alert of a storm.
    outcomes = [
        AlertOutcome.model_construct(
            event_id=item.alert.event_id, offset=item.offset, kind=item.outcome.kind,
            incident_id=item.outcome.incident_id, reason=item.outcome.reason,
        )
        for item in batch
    ]  # fmt: skip
    triaged = batch[-1].alert.follow(
        AlertsTriaged, produced_by=PRODUCER, incident_id=None, source_topic=topic, source_partition=partition,
        outcomes=outcomes,
    )  # fmt: skip
    return [*_IncidentChanges.of(batch).events(), triaged]


def _ref(item: TriagedAlert) -> AlertRef:
    alert = item.alert
    return AlertRef(
        fingerprint=item.outcome.fingerprint, alertname=alert.alertname, status=alert.status, labels=alert.labels,
        annotations=alert.annotations, starts_at=alert.starts_at,
    )  # fmt: skip


@dataclass
class _Incident:
    """What one batch did to one incident."""

    opened: TriagedAlert | None = None
    changes: list[TriagedAlert] = field(default_factory=list)
    resolved: TriagedAlert | None = None
    escalated_to: Severity | None = None
    storm_started: bool = False

    def events(self) -> list[Event]:
        events: list[Event] = []
        if self.opened is not None:
            events.append(_opened(self.opened))
        if self.changes:
            events.append(self._update())
        if self.resolved is not None:
            item = self.resolved
            events.append(
                item.alert.follow(
                    IncidentResolved, produced_by=PRODUCER, incident_id=item.outcome.incident_id,
                    resolved_by="alerts_resolved", summary=f"all {item.outcome.total} alerts resolved",
                )
            )  # fmt: skip
        return events

    def _update(self) -> IncidentUpdated:
        last = self.changes[-1]
        outcome = last.outcome
        storm = None
        if outcome.storm_group is not None:
            storm = StormMembers(
                group=outcome.storm_group, alerts=outcome.total, firing=outcome.firing, services=outcome.services
            )
        return last.alert.follow(
            IncidentUpdated, produced_by=PRODUCER, incident_id=outcome.incident_id, reason=self._reason(),
            alerts=[_ref(item) for item in self.changes[-MAX_ALERT_REFS:]], alert_count=outcome.firing,
            severity=self.escalated_to, storm=storm,
            details={"fingerprint": outcome.fingerprint, "firing": outcome.firing, "total": outcome.total,
                     "changes": self._counts()},
        )  # fmt: skip

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.changes:
            counts[item.outcome.effect] = counts.get(item.outcome.effect, 0) + 1
        return counts

    def _reason(self) -> str:
        if len(self.changes) == 1 and not self.storm_started:
            item = self.changes[0]
            template = _UPDATE_REASONS[item.outcome.effect]
            return template.format(alertname=item.alert.alertname, severity=item.alert.severity)
        parts = [f"{n} alert(s) {_CHANGE_WORDS[effect]}" for effect, n in self._counts().items()]
        reason = ", ".join(parts)
        outcome = self.changes[-1].outcome
        if self.storm_started and outcome.storm_group is not None:
            reason = f"alert storm in {outcome.storm_group}: its services' alerts join this incident; {reason}"
        return reason


class _IncidentChanges:
    def __init__(self) -> None:
        self._incidents: dict[str, _Incident] = {}

    @classmethod
    def of(cls, batch: Sequence[TriagedAlert]) -> _IncidentChanges:
        changes = cls()
        for item in batch:
            changes._add(item)
        return changes

    def events(self) -> list[Event]:
        return [event for incident in self._incidents.values() for event in incident.events()]

    def _add(self, item: TriagedAlert) -> None:
        outcome = item.outcome
        if outcome.incident_id is None or outcome.kind in ("duplicate", "suppressed"):
            return
        incident = self._incidents.setdefault(outcome.incident_id, _Incident())
        incident.storm_started = incident.storm_started or outcome.storm_started
        match outcome.effect:
            case "opened":
                incident.opened = item
            case "resolved":
                incident.resolved = item
            case "alert_added" | "alert_refired" | "alert_resolved" | "escalated":
                incident.changes.append(item)
                if outcome.effect == "escalated":
                    incident.escalated_to = _higher(incident.escalated_to, item.alert.severity)


def _higher(current: Severity | None, candidate: Severity) -> Severity:
    if current is None or SEVERITY_RANK[candidate] > SEVERITY_RANK[current]:
        return candidate
    return current


def _opened(item: TriagedAlert) -> IncidentOpened:
    alert, outcome = item.alert, item.outcome
    namespace = alert.labels.get("namespace")
    title = f"{alert.alertname} on {alert.service}" + (f" ({namespace})" if namespace else "")
    return alert.follow(
        IncidentOpened, produced_by=PRODUCER, incident_id=outcome.incident_id, fingerprint=outcome.fingerprint,
        title=title, service=alert.service, namespace=namespace, severity=alert.severity, alerts=[_ref(item)],
    )  # fmt: skip
