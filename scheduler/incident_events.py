"""What monitoring tells the swarm about an alert: the incident events a correlation outcome stands for."""

from __future__ import annotations

from bus.events import AlertReceived, AlertRef, Event, IncidentOpened, IncidentResolved, IncidentUpdated
from scheduler.alert_correlation import CorrelationOutcome

PRODUCER = "monitoring"

_UPDATE_REASONS = {
    "alert_added": "alert {alertname} joined the incident",
    "alert_refired": "alert {alertname} fired again",
    "alert_resolved": "alert {alertname} resolved",
    "escalated": "alert {alertname} raised the severity to {severity}",
}


def incident_events(alert: AlertReceived, outcome: CorrelationOutcome) -> list[Event]:
    """IncidentOpened, IncidentUpdated or IncidentResolved for this alert; nothing for duplicates and suppressed."""
    if outcome.incident_id is None or outcome.kind in ("duplicate", "suppressed"):
        return []
    ref = AlertRef(
        fingerprint=outcome.fingerprint,
        alertname=alert.alertname,
        status=alert.status,
        labels=alert.labels,
        annotations=alert.annotations,
        starts_at=alert.starts_at,
    )
    if outcome.effect == "opened":
        namespace = alert.labels.get("namespace")
        title = f"{alert.alertname} on {alert.service}" + (f" ({namespace})" if namespace else "")
        return [
            alert.follow(
                IncidentOpened, produced_by=PRODUCER, incident_id=outcome.incident_id, fingerprint=outcome.fingerprint,
                title=title, service=alert.service, namespace=namespace, severity=alert.severity, alerts=[ref],
            )
        ]  # fmt: skip
    if outcome.effect == "resolved":
        return [
            alert.follow(
                IncidentResolved, produced_by=PRODUCER, incident_id=outcome.incident_id,
                resolved_by="alerts_resolved", summary=f"all {outcome.total} alerts resolved",
            )
        ]  # fmt: skip
    template = _UPDATE_REASONS.get(outcome.effect)
    if template is None:
        return []
    return [
        alert.follow(
            IncidentUpdated, produced_by=PRODUCER, incident_id=outcome.incident_id,
            reason=template.format(alertname=alert.alertname, severity=alert.severity), alerts=[ref],
            alert_count=outcome.firing, severity=alert.severity if outcome.effect == "escalated" else None,
            details={"fingerprint": outcome.fingerprint, "firing": outcome.firing, "total": outcome.total},
        )
    ]  # fmt: skip
