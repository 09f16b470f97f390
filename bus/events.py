"""Every event the swarm exchanges: one frozen pydantic model per event, past-tense names, one union.

All events share the envelope in `Event`. On the wire an event is its JSON; unknown fields are ignored so that
older consumers keep reading newer producers. `EventUnion` discriminates on `type`.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bus.incident_states import IncidentState

SCHEMA_VERSION = 1

Severity = Literal["critical", "high", "warning", "info"]
AlertStatus = Literal["firing", "resolved"]
RiskTier = Literal["SAFE", "CONFIRM", "FORBIDDEN"]


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every wire model: immutable, unknown fields tolerated."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class TraceContext(Contract):
    """W3C trace context (https://www.w3.org/TR/trace-context/) carried with every event."""

    # version-traceid-parentid-flags, lower-case hex; checked by pydantic-core (this runs on every decode).
    traceparent: str = Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
    tracestate: str | None = None

    @classmethod
    def new_root(cls) -> Self:
        return cls(traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01")

    @property
    def trace_id(self) -> str:
        return self.traceparent.split("-")[1]

    def child(self) -> Self:
        """The context of a new span in the same trace, parented by this one."""
        version, trace_id, _, flags = self.traceparent.split("-")
        return type(self)(traceparent=f"{version}-{trace_id}-{secrets.token_hex(8)}-{flags}", tracestate=self.tracestate)


E = TypeVar("E", bound="Event")


class Event(Contract):
    """The envelope every event carries."""

    event_id: str = Field(default_factory=_new_id)
    type: str
    schema_version: int = SCHEMA_VERSION
    incident_id: str | None = None
    correlation_id: str = Field(default_factory=_new_id)
    causation_id: str | None = None
    produced_by: str
    occurred_at: datetime = Field(default_factory=_now)
    trace: TraceContext = Field(default_factory=TraceContext.new_root)

    @field_validator("occurred_at")
    @classmethod
    def _require_timezone(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must carry a timezone")
        return value

    def follow(self, event_cls: type[E], *, produced_by: str, **fields: Any) -> E:
        """A new event caused by this one: same incident and correlation, causation set, child trace span."""
        fields.setdefault("incident_id", self.incident_id)
        return event_cls(
            correlation_id=self.correlation_id,
            causation_id=self.event_id,
            produced_by=produced_by,
            trace=self.trace.child(),
            **fields,
        )


# ---------------------------------------------------------------- shared payload parts


class AlertRef(Contract):
    """An alert as an incident remembers it."""

    fingerprint: str
    alertname: str
    status: AlertStatus
    labels: dict[str, str] = Field(default_factory=dict)
    # Alertmanager's annotations (summary, description, runbook_url...): text written by people, untrusted.
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None


class Evidence(Contract):
    """One piece of evidence behind a diagnosis: a metric, a change, a log excerpt, a runbook, a past incident."""

    kind: Literal["metric", "change", "log", "runbook", "incident", "note"]
    summary: str
    source: str | None = None
    score: float | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class PlanStep(Contract):
    """One action of a remediation plan, named from the action catalog."""

    action: str
    target: str
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    retries: int = Field(default=0, ge=0, le=5)


class VerifySpec(Contract):
    """How to tell the fix worked: a metrics query compared with a threshold over a window."""

    query: str
    comparator: Literal["<", "<=", ">", ">=", "=="] = "<"
    threshold: float
    window_s: float = Field(default=60.0, gt=0, le=3600)


class RemediationPlan(Contract):
    """The strict plan contract diagnosis proposes and coordination scores."""

    steps: list[PlanStep] = Field(min_length=1)
    rollback: list[PlanStep] = Field(default_factory=list)
    verify: VerifySpec | None = None


class RiskAssessment(Contract):
    """A risk score with the breakdown that produced it."""

    score: float = Field(ge=0, le=1)
    tier: RiskTier
    breakdown: dict[str, float] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)


class ActionStat(Contract):
    """How an action has fared for one kind of incident (its primary alert name), from closed incidents."""

    kind: str
    action: str
    attempts: int = Field(ge=0)
    successes: int = Field(ge=0)


class KnowledgeHit(Contract):
    """One search result from the knowledge base."""

    doc_id: str
    score: float
    title: str
    type: Literal["runbook", "postmortem", "incident"]
    snippet: str = ""
    source: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class LlmEntry(Contract):
    """One step of a model conversation, as it happened: a message sent or received, a tool call and its result,
    or a guardrail's verdict (`refused`, `fallback`, `cache_hit`)."""

    kind: Literal["system", "user", "assistant", "tool_call", "tool_result", "refused", "fallback", "cache_hit"]
    content: str = ""
    # The tool's name and arguments (tool_call, tool_result), the call's usage (assistant), what was refused...
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime = Field(default_factory=_now)


class LlmTranscript(Contract):
    """The audit of one use of the model for an incident: every prompt, reply, tool call and token count."""

    purpose: str = "diagnosis"
    model: str
    # accepted: the model's answer was used; repaired: used after one repair; fallback: the deterministic path was
    # used instead (`reason` says why); cached: an earlier answer to the same question was used.
    status: Literal["accepted", "repaired", "fallback", "cached"]
    reason: str = ""
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    model_calls: int = Field(default=0, ge=0)
    tool_calls: int = Field(default=0, ge=0)
    duration_s: float = Field(default=0.0, ge=0)
    # What the guardrails refused (an unlisted or forbidden action, a target outside the incident...).
    refusals: list[str] = Field(default_factory=list)
    entries: list[LlmEntry] = Field(default_factory=list)


# ---------------------------------------------------------------- alerts and incidents


class AlertReceived(Event):
    type: Literal["alert.received"] = "alert.received"
    source: str = "alertmanager"
    status: AlertStatus
    alertname: str = Field(min_length=1)
    service: str = Field(min_length=1)
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    source_fingerprint: str | None = None
    generator_url: str | None = None


class IncidentOpened(Event):
    type: Literal["incident.opened"] = "incident.opened"
    fingerprint: str
    title: str
    service: str
    namespace: str | None = None
    severity: Severity
    alerts: list[AlertRef] = Field(default_factory=list)


class StormMembers(Contract):
    """What an alert storm folded into one incident: its service group and member counts (so far)."""

    group: str
    alerts: int = Field(ge=0)
    firing: int = Field(ge=0)
    services: int = Field(ge=0)


class IncidentUpdated(Event):
    type: Literal["incident.updated"] = "incident.updated"
    reason: str
    alerts: list[AlertRef] = Field(default_factory=list)
    alert_count: int = Field(default=0, ge=0)
    severity: Severity | None = None
    state: IncidentState | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    # Set while the incident is its service group's storm incident: alerts of other services join it.
    storm: StormMembers | None = None


class IncidentResolved(Event):
    type: Literal["incident.resolved"] = "incident.resolved"
    resolved_by: Literal["alerts_resolved", "verification", "human"]
    summary: str = ""


class IncidentClosed(Event):
    type: Literal["incident.closed"] = "incident.closed"
    outcome: Literal["remediated", "escalated", "resolved_itself", "failed", "denied"]
    title: str
    service: str
    kind: str | None = None
    severity: Severity | None = None
    alerts: list[AlertRef] = Field(default_factory=list)
    hypothesis: str | None = None
    actions: list[PlanStep] = Field(default_factory=list)
    verified: bool = False
    durations_s: dict[str, float] = Field(default_factory=dict)
    summary: str = ""


# ---------------------------------------------------------------- diagnosis


class DiagnosisRequested(Event):
    type: Literal["diagnosis.requested"] = "diagnosis.requested"
    service: str
    kind: str | None = None
    severity: Severity | None = None
    namespace: str | None = None
    alerts: list[AlertRef] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)


class DiagnosisCompleted(Event):
    type: Literal["diagnosis.completed"] = "diagnosis.completed"
    hypothesis: str
    confidence: float = Field(ge=0, le=1)
    evidence: list[Evidence] = Field(default_factory=list)
    plan: RemediationPlan | None = None
    method: Literal["deterministic", "llm"] = "deterministic"
    kind: str | None = None
    # Success statistics of the plan's actions for this kind of incident, as knowledge reported them.
    history: list[ActionStat] = Field(default_factory=list)
    # Why this plan, in a few sentences for the human who may have to approve it (the model's, or the playbook's).
    rationale: str = ""
    # The audit of the model's part, when a model was asked (also when its answer was refused or it failed).
    llm: LlmTranscript | None = None


# ---------------------------------------------------------------- actions and decisions


class ActionProposed(Event):
    type: Literal["action.proposed"] = "action.proposed"
    action_id: str = Field(default_factory=_new_id)
    step: PlanStep
    rollback: list[PlanStep] = Field(default_factory=list)
    verify: VerifySpec | None = None
    rationale: str = ""


class ActionApproved(Event):
    type: Literal["action.approved"] = "action.approved"
    action_id: str
    step: PlanStep
    approved_by: str
    mode: Literal["auto", "human"]
    risk: RiskAssessment
    idempotency_key: str
    comment: str = ""
    # Set on the last step of a plan: execution verifies after it and rolls back with these steps on failure.
    rollback: list[PlanStep] = Field(default_factory=list)
    verify: VerifySpec | None = None


class ActionRejected(Event):
    type: Literal["action.rejected"] = "action.rejected"
    action_id: str
    rejected_by: str
    reason: str
    risk: RiskAssessment | None = None


class EscalationRaised(Event):
    type: Literal["escalation.raised"] = "escalation.raised"
    action_id: str | None = None
    reason: str
    summary: str = ""
    tier: str = "on-call"
    risk: RiskAssessment | None = None
    step: PlanStep | None = None
    needs_decision: bool = False
    # For a decision: a short explanation for the approver (why this action, its risk, what similar incidents did).
    # It informs the human; it never decides anything.
    brief: str = ""


class ChannelDelivery(Contract):
    """How one channel fared with one escalation message."""

    channel: str
    status: Literal["delivered", "failed"]
    attempts: int = Field(default=1, ge=0)
    error: str | None = None


class EscalationNotified(Event):
    """A tier of an escalation policy was asked (or reminded) about a pending decision, through its channels."""

    type: Literal["escalation.notified"] = "escalation.notified"
    action_id: str | None = None
    policy: str
    tier: str
    tier_index: int = Field(ge=0)
    # 0: the tier's first message (for tier_index > 0 this is the escalation to the next tier); n: n-th reminder.
    reminder: int = Field(default=0, ge=0)
    recipients: list[str] = Field(default_factory=list)
    deliveries: list[ChannelDelivery] = Field(default_factory=list)
    # True: not a request but the word that it is closed (answered or denied), to the tiers asked before.
    resolved: bool = False


class ApprovalExpired(Event):
    """Nobody answered before the last tier's timeout: the policy's final step."""

    type: Literal["approval.expired"] = "approval.expired"
    action_id: str | None = None
    policy: str
    waited_s: float = Field(ge=0)
    # deny: the action is rejected; keep_waiting: the incident keeps waiting, no tier is asked any more.
    outcome: Literal["deny", "keep_waiting"] = "deny"


class DecisionRecorded(Event):
    """A human's answer to an escalation: approve or reject the pending action of an incident."""

    type: Literal["decision.recorded"] = "decision.recorded"
    action_id: str | None = None
    decision: Literal["approve", "reject"]
    decided_by: str = Field(min_length=1)
    comment: str = ""
    # How it came: cli, api, web (the approvals page), link (a signed one-time link), policy (a final timeout).
    via: str = ""


class ActionExecuted(Event):
    type: Literal["action.executed"] = "action.executed"
    action_id: str
    step: PlanStep
    idempotency_key: str
    attempts: int = Field(default=1, ge=1)
    duration_ms: float = Field(ge=0)
    output: dict[str, Any] = Field(default_factory=dict)


class ActionFailed(Event):
    type: Literal["action.failed"] = "action.failed"
    action_id: str
    step: PlanStep
    idempotency_key: str
    error: str
    attempts: int = Field(default=1, ge=1)
    rolled_back: bool = False


class VerificationPassed(Event):
    type: Literal["verification.passed"] = "verification.passed"
    action_id: str
    verify: VerifySpec
    observed: float


class VerificationFailed(Event):
    type: Literal["verification.failed"] = "verification.failed"
    action_id: str
    verify: VerifySpec
    observed: float | None = None
    reason: str
    rolled_back: bool = False


# ---------------------------------------------------------------- knowledge, changes, liveness


class KnowledgeQueried(Event):
    type: Literal["knowledge.queried"] = "knowledge.queried"
    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=100)
    filters: dict[str, str] = Field(default_factory=dict)
    kind: str | None = None
    # Actions whose success statistics for `kind` the asker wants back.
    actions: list[str] = Field(default_factory=list)


class KnowledgeAnswered(Event):
    type: Literal["knowledge.answered"] = "knowledge.answered"
    query_event_id: str
    hits: list[KnowledgeHit] = Field(default_factory=list)
    action_stats: list[ActionStat] = Field(default_factory=list)


AlertOutcomeKind = Literal["opened", "merged", "duplicate", "suppressed"]


class AlertOutcome(Contract):
    """What monitoring made of one alert record: exactly one outcome per record of the alerts topic."""

    event_id: str
    offset: int = Field(ge=0)
    kind: AlertOutcomeKind
    incident_id: str | None = None
    reason: str = ""


class AlertsTriaged(Event):
    """Monitoring's account of a batch of one alerts partition, in the transaction of its incident events.

    Every alert record gets exactly one outcome: `opened` an incident, `merged` into one, dropped as a
    `duplicate`, or `suppressed` (flapping, or the resolve of an alert nobody knows). Storm accounting reads it.
    """

    type: Literal["alerts.triaged"] = "alerts.triaged"
    source_topic: str
    source_partition: int = Field(ge=0)
    outcomes: list[AlertOutcome]


class ChangeRecorded(Event):
    type: Literal["change.recorded"] = "change.recorded"
    service: str
    kind: Literal["deploy", "config", "feature_flag", "infrastructure"]
    description: str = ""
    version: str | None = None
    previous_version: str | None = None
    author: str | None = None


class AgentHeartbeat(Event):
    type: Literal["agent.heartbeat"] = "agent.heartbeat"
    agent: str
    instance_id: str
    pid: int
    started_at: datetime
    status: Literal["starting", "running", "degraded", "stopping"] = "running"
    details: dict[str, Any] = Field(default_factory=dict)


ALL_EVENT_TYPES: tuple[type[Event], ...] = (
    AlertReceived,
    IncidentOpened,
    IncidentUpdated,
    IncidentResolved,
    IncidentClosed,
    DiagnosisRequested,
    DiagnosisCompleted,
    ActionProposed,
    ActionApproved,
    ActionRejected,
    EscalationRaised,
    DecisionRecorded,
    EscalationNotified,
    ApprovalExpired,
    ActionExecuted,
    ActionFailed,
    VerificationPassed,
    VerificationFailed,
    KnowledgeQueried,
    KnowledgeAnswered,
    AlertsTriaged,
    ChangeRecorded,
    AgentHeartbeat,
)

AnyEvent = (
    AlertReceived
    | IncidentOpened
    | IncidentUpdated
    | IncidentResolved
    | IncidentClosed
    | DiagnosisRequested
    | DiagnosisCompleted
    | ActionProposed
    | ActionApproved
    | ActionRejected
    | EscalationRaised
    | DecisionRecorded
    | EscalationNotified
    | ApprovalExpired
    | ActionExecuted
    | ActionFailed
    | VerificationPassed
    | VerificationFailed
    | KnowledgeQueried
    | KnowledgeAnswered
    | AlertsTriaged
    | ChangeRecorded
    | AgentHeartbeat
)
EventUnion = Annotated[AnyEvent, Field(discriminator="type")]


def event_type_name(event_cls: type[Event]) -> str:
    """The wire `type` of an event class, e.g. "incident.opened"."""
    return event_cls.model_fields["type"].default
