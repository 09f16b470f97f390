"""The topic registry: every topic opswarm uses, declared in code, and which topic and key each event takes.

Topics are created and kept in line with these declarations by `bus.admin.ensure_topics`, never by hand.
Events are keyed so that related ones stay ordered: incident events by incident id, alerts and changes by
service, heartbeats by agent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bus import events as ev

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic's declared shape."""

    name: str
    partitions: int
    retention_ms: int
    cleanup_policy: str = "delete"
    extra_config: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy, **self.extra_config}


ALERTS = TopicSpec("opswarm.alerts.v1", 6, 7 * DAY_MS, description="AlertReceived, keyed by service")
INCIDENTS = TopicSpec("opswarm.incidents.v1", 6, 30 * DAY_MS, description="incident lifecycle, keyed by incident")
DIAGNOSIS = TopicSpec("opswarm.diagnosis.v1", 6, 30 * DAY_MS, description="diagnosis requests and results")
ACTIONS = TopicSpec("opswarm.actions.v1", 6, 30 * DAY_MS, description="proposals, decisions, execution, verification")
ESCALATIONS = TopicSpec("opswarm.escalations.v1", 3, 30 * DAY_MS, description="escalations to humans and their decisions")
KNOWLEDGE = TopicSpec("opswarm.knowledge.v1", 3, 1 * DAY_MS, description="knowledge queries and answers")
TRIAGE = TopicSpec(
    "opswarm.triage.v1", 6, 1 * DAY_MS, description="AlertsTriaged: one outcome per alert record, for accounting"
)
CHANGES = TopicSpec("opswarm.changes.v1", 6, 30 * DAY_MS, description="deploys and config changes, keyed by service")
HEARTBEATS = TopicSpec(
    "opswarm.heartbeats.v1", 1, 3600 * 1000, "compact,delete", description="agent liveness, latest per agent"
)
DLQ = TopicSpec("opswarm.dlq.v1", 3, 30 * DAY_MS, description="poison records with their reason and origin")
DOCTOR = TopicSpec("opswarm.doctor.v1", 1, 3600 * 1000, description="round trips of `opswarm doctor`")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    ALERTS, INCIDENTS, DIAGNOSIS, ACTIONS, ESCALATIONS, KNOWLEDGE, TRIAGE, CHANGES, HEARTBEATS, DLQ, DOCTOR,
)  # fmt: skip


def _by_incident(event: ev.Event) -> str:
    return event.incident_id or event.correlation_id


def _by_service(event: ev.Event) -> str:
    return getattr(event, "service")


def _by_source_partition(event: ev.Event) -> str:
    return f"{getattr(event, 'source_topic')}:{getattr(event, 'source_partition')}"


def _by_agent(event: ev.Event) -> str:
    return getattr(event, "agent")


@dataclass(frozen=True)
class Route:
    """Where an event type goes and what keeps it in order."""

    topic: TopicSpec
    key: Callable[[ev.Event], str]


ROUTES: dict[type[ev.Event], Route] = {
    ev.AlertReceived: Route(ALERTS, _by_service),
    ev.IncidentOpened: Route(INCIDENTS, _by_incident),
    ev.IncidentUpdated: Route(INCIDENTS, _by_incident),
    ev.IncidentResolved: Route(INCIDENTS, _by_incident),
    ev.IncidentClosed: Route(INCIDENTS, _by_incident),
    ev.DiagnosisRequested: Route(DIAGNOSIS, _by_incident),
    ev.DiagnosisCompleted: Route(DIAGNOSIS, _by_incident),
    ev.ActionProposed: Route(ACTIONS, _by_incident),
    ev.ActionApproved: Route(ACTIONS, _by_incident),
    ev.ActionRejected: Route(ACTIONS, _by_incident),
    ev.ActionExecuted: Route(ACTIONS, _by_incident),
    ev.ActionFailed: Route(ACTIONS, _by_incident),
    ev.VerificationPassed: Route(ACTIONS, _by_incident),
    ev.VerificationFailed: Route(ACTIONS, _by_incident),
    ev.EscalationRaised: Route(ESCALATIONS, _by_incident),
    ev.DecisionRecorded: Route(ESCALATIONS, _by_incident),
    ev.EscalationNotified: Route(ESCALATIONS, _by_incident),
    ev.ApprovalExpired: Route(ESCALATIONS, _by_incident),
    ev.KnowledgeQueried: Route(KNOWLEDGE, _by_incident),
    ev.KnowledgeAnswered: Route(KNOWLEDGE, _by_incident),
    ev.AlertsTriaged: Route(TRIAGE, _by_source_partition),
    ev.ChangeRecorded: Route(CHANGES, _by_service),
    ev.AgentHeartbeat: Route(HEARTBEATS, _by_agent),
}


def route_for(event: ev.Event) -> Route:
    """The route of an event; every event type in the union has one."""
    return ROUTES[type(event)]


def topic_named(name: str) -> TopicSpec:
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"no topic named {name!r} in the registry")
