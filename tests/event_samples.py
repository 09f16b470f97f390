"""One realistic sample of every event type, for contract and round-trip tests."""

from __future__ import annotations

from datetime import UTC, datetime

from bus import events as ev

_STEP = ev.PlanStep(action="restart_process", target="checkout", params={"grace_s": 5}, timeout_s=30, retries=1)
_VERIFY = ev.VerifySpec(query='rate(http_errors_total{service="checkout"}[1m])', comparator="<", threshold=0.05)
_RISK = ev.RiskAssessment(score=0.2, tier="SAFE", breakdown={"base": 0.1, "environment": 0.1}, reasons=["prod"])
_ALERT = ev.AlertRef(
    fingerprint="32c16fb6eca3387b",
    alertname="HighErrorRate",
    status="firing",
    labels={"service": "checkout", "severity": "critical"},
    starts_at=datetime(2026, 11, 21, 4, 17, 8, tzinfo=UTC),
)


def sample_events(incident_id: str = "inc-1") -> list[ev.Event]:
    """Every event type once, all in one incident."""
    common = {"produced_by": "tests", "incident_id": incident_id}
    return [
        ev.AlertReceived(
            produced_by="bridge",
            status="firing",
            alertname="HighErrorRate",
            service="checkout",
            severity="critical",
            labels={"alertname": "HighErrorRate", "namespace": "prod", "service": "checkout"},
            annotations={"summary": "5xx rate above 5% for checkout"},
            starts_at=datetime(2026, 11, 21, 4, 17, 8, tzinfo=UTC),
            source_fingerprint="32c16fb6eca3387b",
        ),
        ev.IncidentOpened(
            **common, fingerprint="f1", title="HighErrorRate on checkout", service="checkout", severity="critical",
            namespace="prod", alerts=[_ALERT],
        ),
        ev.IncidentUpdated(**common, reason="alert merged", alerts=[_ALERT], alert_count=2, severity="critical"),
        ev.IncidentResolved(**common, resolved_by="verification", summary="error rate back under 5%"),
        ev.IncidentClosed(
            **common, outcome="remediated", title="HighErrorRate on checkout", service="checkout",
            hypothesis="bad deploy", actions=[_STEP], verified=True, durations_s={"mttr": 42.0},
        ),
        ev.DiagnosisRequested(**common, service="checkout", alerts=[_ALERT], context={"namespace": "prod"}),
        ev.DiagnosisCompleted(
            **common, hypothesis="deploy v2 raised the error rate", confidence=0.8,
            evidence=[ev.Evidence(kind="change", summary="deploy v2 at 04:15", source="changes", score=0.9)],
            plan=ev.RemediationPlan(steps=[_STEP], rollback=[], verify=_VERIFY),
        ),
        ev.ActionProposed(**common, action_id="act-1", step=_STEP, verify=_VERIFY, rationale="restart clears it"),
        ev.ActionApproved(
            **common, action_id="act-1", step=_STEP, approved_by="coordination", mode="auto", risk=_RISK,
            idempotency_key="inc-1/act-1",
        ),
        ev.ActionRejected(**common, action_id="act-2", rejected_by="coordination", reason="FORBIDDEN", risk=_RISK),
        ev.EscalationRaised(**common, action_id="act-2", reason="database failover is forbidden", risk=_RISK),
        ev.DecisionRecorded(**common, action_id="act-3", decision="approve", decided_by="alice", comment="go",
                            via="web"),
        ev.EscalationNotified(
            **common, action_id="act-3", policy="prod-critical", tier="secondary", tier_index=1, reminder=0,
            recipients=["bob@example.com"],
            deliveries=[ev.ChannelDelivery(channel="slack", status="delivered", attempts=2),
                        ev.ChannelDelivery(channel="email", status="failed", attempts=3, error="connection refused")],
        ),
        ev.ApprovalExpired(**common, action_id="act-3", policy="prod-critical", waited_s=900.0, outcome="deny"),
        ev.ActionExecuted(
            **common, action_id="act-1", step=_STEP, idempotency_key="inc-1/act-1", duration_ms=120.5,
            output={"pid": 4242},
        ),
        ev.ActionFailed(
            **common, action_id="act-3", step=_STEP, idempotency_key="inc-1/act-3", error="timeout", rolled_back=True
        ),
        ev.VerificationPassed(**common, action_id="act-1", verify=_VERIFY, observed=0.01),
        ev.VerificationFailed(**common, action_id="act-3", verify=_VERIFY, observed=0.3, reason="still erroring"),
        ev.KnowledgeQueried(**common, query="HighErrorRate checkout", k=5, filters={"type": "runbook"}),
        ev.KnowledgeAnswered(
            **common, query_event_id="q-1",
            hits=[ev.KnowledgeHit(doc_id="rb-1", score=0.9, title="High error rate", type="runbook", snippet="...")],
        ),
        ev.AlertsTriaged(
            produced_by="monitoring", source_topic="opswarm.alerts.v1", source_partition=2,
            outcomes=[
                ev.AlertOutcome(event_id="5f3c2a8e-0000-4000-8000-000000000041", offset=41, kind="opened", incident_id="inc-1"),
                ev.AlertOutcome(event_id="5f3c2a8e-0000-4000-8000-000000000041", offset=42, kind="duplicate", incident_id="inc-1",
                                reason="same status within the dedup window"),
            ],
        ),  # fmt: skip
        ev.ChangeRecorded(produced_by="ci", service="checkout", kind="deploy", version="v2", previous_version="v1"),
        ev.AgentHeartbeat(
            produced_by="monitoring", agent="monitoring", instance_id="monitoring-0", pid=4242,
            started_at=datetime(2026, 11, 21, 4, 0, tzinfo=UTC),
        ),
    ]  # fmt: skip
