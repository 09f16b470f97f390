"""From what was gathered to a diagnosis: evidence, a confidence with its reasons, and a plan that holds.

Confidence starts at the matched rule's and moves by simple, stated steps, always bounded to [0, 1]: a recent
change the rule relies on +0.2; each metric probe that confirms the alert +0.1, that contradicts it -0.1;
knowledge's statistics for the plan's first action, with at least
two attempts, +0.1 when it remediated 70 % or more, -0.1 when 30 % or less. The last evidence item says how the
number came about. A plan is kept only if every step names a catalog action with params its schema accepts
(FORBIDDEN actions included: refusing them is coordination's call, with a reason the operator sees) and the
plan keeps the JSON-schema contract; otherwise there is no plan, and the evidence says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agents.diagnosis.knowledge_replies import KnowledgeReply
from agents.diagnosis.playbook import PlanDraft, RenderedProbe, Selection, Situation
from bus.events import ActionStat, ChangeRecorded, Evidence, KnowledgeHit, PlanStep, RemediationPlan, VerifySpec
from bus.plan_contract import plan_contract_errors
from execution.catalog import Catalog
from execution.prometheus_queries import QueryResult, compare
from knowledge.log_excerpts import LogExcerpts

NO_RULE_CONFIDENCE = 0.1
CHANGE_BONUS = 0.2
PROBE_STEP = 0.1
HISTORY_STEP = 0.1
HISTORY_MIN_ATTEMPTS = 2


@dataclass(frozen=True)
class ProbeReading:
    probe: RenderedProbe
    result: QueryResult


@dataclass(frozen=True)
class Gathered:
    """Everything the evidence sources returned for one incident."""

    readings: Sequence[ProbeReading] = ()
    changes: Sequence[ChangeRecorded] = ()
    logs: LogExcerpts | None = None
    knowledge: KnowledgeReply = KnowledgeReply(status="skipped")
    # What could not be gathered, and why (Prometheus not configured, a source unavailable...).
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class Diagnosis:
    hypothesis: str
    confidence: float
    evidence: list[Evidence]
    plan: RemediationPlan | None
    history: list[ActionStat] = field(default_factory=list)
    # Why this plan, for the human who may approve it.
    rationale: str = ""


def conclude(
    situation: Situation,
    selection: Selection | None,
    draft: PlanDraft | None,
    gathered: Gathered,
    catalog: Catalog,
    *,
    now: datetime,
) -> Diagnosis:
    """The diagnosis of one incident from the matched rule (if any), its plan draft and the gathered evidence."""
    evidence: list[Evidence] = []
    adjustments: list[tuple[float, str]] = []
    for reading in gathered.readings:
        item, delta = metric_evidence(reading, situation.kind)
        evidence.append(item)
        if delta:
            verb = "confirms" if delta > 0 else "contradicts"
            adjustments.append((delta, f"metric {reading.probe.name} {verb} the alert"))
    evidence.extend(change_evidence(change, now) for change in gathered.changes)
    if selection is not None and selection.change is not None:
        change = selection.change
        adjustments.append((CHANGE_BONUS, f"recent {change.kind} {change.previous_version}→{change.version}"))
    evidence.extend(log_evidence(gathered.logs))
    history = list(gathered.knowledge.answer.action_stats) if gathered.knowledge.answer else []
    evidence.extend(knowledge_evidence(gathered.knowledge, situation.kind))
    evidence.extend(Evidence(kind="note", summary=note) for note in gathered.notes)

    if selection is None:
        hypothesis = f"no playbook rule for {situation.kind}"
        evidence.append(_confidence_note(NO_RULE_CONFIDENCE, "no rule matched", []))
        return Diagnosis(hypothesis, NO_RULE_CONFIDENCE, evidence, None, history)

    hypothesis = selection.render_lenient(selection.rule.hypothesis)
    plan, notes = (None, ["no plan: none drafted"]) if draft is None else (draft.plan, list(draft.problems))
    if plan is not None:
        plan, refusals = checked_plan(plan, catalog)
        notes.extend(f"no plan: {refusal}" for refusal in refusals)
    evidence.extend(Evidence(kind="note", summary=note, source="playbook") for note in notes)
    if plan is None:
        reasons = [note.removeprefix("no plan: ") for note in notes if note.startswith("no plan: ")]
        hypothesis = f"{hypothesis}; no plan: {'; '.join(reasons or ['none drafted'])}"
    else:
        stat_step = history_adjustment(plan.steps[0].action, history, situation.kind)
        if stat_step is not None:
            adjustments.append(stat_step)
        better = better_action_note(plan.steps[0].action, history, situation.kind)
        if better is not None:
            evidence.append(better)
    base = selection.rule.confidence
    confidence = round(min(1.0, max(0.0, base + sum(delta for delta, _ in adjustments))), 2)
    evidence.append(_confidence_note(confidence, f"base {base:g} (rule {selection.rule.name})", adjustments))
    rationale = f"Playbook rule {selection.rule.name} matched: {hypothesis}."
    return Diagnosis(hypothesis, confidence, evidence, plan, history, rationale)


def metric_evidence(reading: ProbeReading, kind: str) -> tuple[Evidence, float]:
    """The evidence of one probe and how it moves confidence (+/- PROBE_STEP, 0 when it says nothing)."""
    probe, result = reading.probe, reading.result
    data = {"query": probe.query, "comparator": probe.comparator, "threshold": probe.threshold}
    if result.status != "ok" or result.value is None:
        why = "no samples" if result.status == "empty" else f"not read: {result.error}"
        return Evidence(kind="note", summary=f"metric {probe.name}: {why}", source=probe.query, data=data), 0.0
    value = result.value
    confirms = compare(value, VerifySpec(query=probe.query, comparator=probe.comparator, threshold=probe.threshold))
    verdict = "confirms" if confirms else "does not confirm"
    summary = f"{probe.name} = {value:g}: {verdict} {kind} ({probe.comparator} {probe.threshold:g})"
    data |= {"value": value, "confirms": confirms, "samples": [s.model_dump() for s in result.samples[:5]]}
    delta = PROBE_STEP if confirms else -PROBE_STEP
    return Evidence(kind="metric", summary=summary, source=probe.query, data=data), delta


def change_evidence(change: ChangeRecorded, now: datetime) -> Evidence:
    versions = f" {change.previous_version or '?'}→{change.version}" if change.version else ""
    age_s = max(0.0, (now - change.occurred_at).total_seconds())
    description = f": {change.description}" if change.description else ""
    return Evidence(
        kind="change",
        summary=f"{change.kind} of {change.service}{versions} {age_s / 60:.0f} min ago{description}",
        source=change.event_id,
        data={
            "event_id": change.event_id,
            "kind": change.kind,
            "version": change.version,
            "previous_version": change.previous_version,
            "author": change.author,
            "occurred_at": change.occurred_at.isoformat(),
            "age_s": round(age_s, 1),
        },
    )


def log_evidence(logs: LogExcerpts | None) -> list[Evidence]:
    if logs is None:
        return []
    if logs.status in ("error", "unconfigured"):
        return [Evidence(kind="note", summary=f"logs not read: {logs.error}", source="logs")]
    if not logs.excerpts:
        where = f"in {len(logs.files)} log files" if logs.files else "(no log files found)"
        return [Evidence(kind="note", summary=f"no error lines for {logs.service} {where}", source="logs")]
    return [
        Evidence(
            kind="log",
            summary=f"{excerpt.matched} error lines in {excerpt.path}; last: {excerpt.lines[-1]}",
            source=excerpt.path,
            data={"path": excerpt.path, "lines": excerpt.lines, "matched": excerpt.matched},
        )
        for excerpt in logs.excerpts
    ]


def knowledge_evidence(reply: KnowledgeReply, kind: str) -> list[Evidence]:
    if reply.answer is None:
        return [] if reply.status == "skipped" else [Evidence(kind="note", summary=reply.error or reply.status)]
    found = [_hit_evidence(hit) for hit in reply.answer.hits]
    stats = [s for s in reply.answer.action_stats if s.kind == kind and s.attempts > 0]
    if stats:
        told = ", ".join(f"{s.action} {s.successes}/{s.attempts}" for s in sorted(stats, key=_rate, reverse=True))
        data = {"action_stats": [s.model_dump() for s in stats]}
        found.append(Evidence(kind="note", summary=f"past {kind} incidents remediated by: {told}", data=data))
    return found


def history_adjustment(action: str, history: Sequence[ActionStat], kind: str) -> tuple[float, str] | None:
    """How knowledge's record of `action` for this kind moves confidence, or None when it says too little."""
    stat = next((s for s in history if s.kind == kind and s.action == action), None)
    if stat is None or stat.attempts < HISTORY_MIN_ATTEMPTS:
        return None
    record = f"{action} remediated {stat.successes} of {stat.attempts} past {kind} incidents"
    if _rate(stat) >= 0.7:
        return HISTORY_STEP, record
    if _rate(stat) <= 0.3:
        return -HISTORY_STEP, record
    return None


def better_action_note(action: str, history: Sequence[ActionStat], kind: str) -> Evidence | None:
    """A note when past incidents of this kind were remediated more often by another action than the plan's."""
    tried = [s for s in history if s.kind == kind and s.attempts > 0]
    planned = next((s for s in tried if s.action == action), None)
    planned_rate = _rate(planned) if planned is not None else 0.0
    others = [s for s in tried if s.action != action and _rate(s) > planned_rate]
    if not others:
        return None
    best = max(others, key=_rate)
    record = f"{planned.successes}/{planned.attempts}" if planned is not None else "no record"
    summary = (
        f"{best.action} remediated past {kind} incidents more often ({best.successes}/{best.attempts})"
        f" than the plan's {action} ({record})"
    )
    return Evidence(kind="note", summary=summary, source="knowledge", data={"better": best.model_dump()})


def checked_plan(plan: RemediationPlan, catalog: Catalog) -> tuple[RemediationPlan | None, list[str]]:
    """The plan with each step's params as the catalog types them, or None and why it cannot be proposed."""
    problems: list[str] = []
    steps = [_checked_step(step, catalog, problems) for step in plan.steps]
    rollback = [_checked_step(step, catalog, problems) for step in plan.rollback]
    if problems:
        return None, problems
    checked = plan.model_copy(update={"steps": steps, "rollback": rollback})
    contract = plan_contract_errors(checked.model_dump(mode="json"))
    if contract:
        return None, [f"breaks the plan contract: {problem}" for problem in contract]
    return checked, []


def _checked_step(step: PlanStep, catalog: Catalog, problems: list[str]) -> PlanStep:
    spec = catalog.get(step.action)
    if spec is None:
        problems.append(f"unknown action {step.action!r}: not in the catalog")
        return step
    refused = spec.validate_params(step.params)
    if refused:
        problems.extend(refused)
        return step
    typed = spec.params.model_validate(dict(step.params)).model_dump(mode="json", exclude_unset=True)
    return step.model_copy(update={"params": typed})


def _hit_evidence(hit: KnowledgeHit) -> Evidence:
    payload = hit.payload
    data = {"doc_id": hit.doc_id, "type": hit.type, "title": hit.title}
    if hit.type != "incident":
        # A runbook or postmortem section: where it is, and the passage that matched.
        section = payload.get("section") if isinstance(payload.get("section"), str) else ""
        data.update(section=section, snippet=hit.snippet)
        where = f"{hit.title} › {section}" if section else hit.title
        return Evidence(
            kind="runbook", summary=f"{hit.type} {where!r}: {hit.snippet}"[:400], source=hit.source or hit.doc_id,
            score=hit.score, data=data,
        )  # fmt: skip
    details = []
    if isinstance(payload.get("outcome"), str):
        data["outcome"] = payload["outcome"]
        details.append(f"outcome {payload['outcome']}")
    actions = _action_names(payload.get("actions"))
    if actions:
        data["actions"] = actions
        details.append(f"actions {', '.join(actions)}")
    said = f" ({'; '.join(details)})" if details else ""
    return Evidence(
        kind="runbook" if hit.type == "runbook" else "incident",
        summary=f"{hit.type} {hit.title!r}{said}",
        source=hit.source or hit.doc_id,
        score=hit.score,
        data=data,
    )


def _action_names(raw: object) -> list[str]:
    """Action names from a stored incident's actions (plan steps as dicts, or bare names)."""
    if not isinstance(raw, list):
        return []
    names = [item.get("action") if isinstance(item, dict) else item for item in raw]
    return [name for name in names if isinstance(name, str)]


def _rate(stat: ActionStat) -> float:
    return stat.successes / stat.attempts if stat.attempts else 0.0


def _confidence_note(confidence: float, base: str, adjustments: list[tuple[float, str]]) -> Evidence:
    steps = "".join(f", {delta:+.2f} {reason}" for delta, reason in adjustments)
    data = {"confidence": confidence, "adjustments": [{"delta": round(d, 2), "reason": r} for d, r in adjustments]}
    return Evidence(kind="note", summary=f"confidence {confidence:g}: {base}{steps}", source="playbook", data=data)
