"""The approver's brief: pure functions of the step, its risk, the diagnosis, history and similar incidents."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from agents.coordination.approval_briefs import (
    CLOSING,
    MAX_BRIEF_CHARS,
    NO_SIMILAR,
    approval_brief,
    one_line,
    plan_brief,
)
from agents.coordination.plan_scoring import score_plan
from bus.events import ActionStat, Evidence, PlanStep, RemediationPlan
from bus.incident_states import IncidentState
from deploy.incident_reports import approval_panel
from execution.catalog import default_catalog
from execution.risk import RiskPolicy
from knowledge.incident_store import AuditEntry, IncidentRecord

CATALOG = default_catalog()
KIND = "HighErrorRate"
ROLLBACK = PlanStep(action="rollback_deploy", target="checkout", params={"to_version": "v1"})
RESTART = PlanStep(action="restart_process", target="checkout")
HISTORY = [
    ActionStat(kind=KIND, action="rollback_deploy", attempts=5, successes=4),
    ActionStat(kind=KIND, action="restart_process", attempts=10, successes=10),
    ActionStat(kind="ServiceDown", action="rollback_deploy", attempts=7, successes=0),
]


def _incident(title: str, score: float, outcome: str = "remediated", actions: tuple[str, ...] = ()) -> Evidence:
    return Evidence(kind="incident", summary=f"incident {title!r}", score=score,
                    data={"title": title, "outcome": outcome, "actions": list(actions)})  # fmt: skip


SIMILAR = [
    _incident("checkout 5xx after deploy v7", 0.62, actions=("rollback_deploy",)),
    _incident("payments errors after config push", 0.91, "escalated", ("restart_process", "rollback_deploy")),
    _incident("cart 500s on a bad flag", 0.40, "failed"),
    _incident("old unrelated blip", 0.10, "resolved_itself"),
]


def _score(*steps: PlanStep, history=HISTORY, confidence: float = 0.7):
    return score_plan(
        RemediationPlan(steps=list(steps)), catalog=CATALOG, policy=RiskPolicy(), environment="prod",
        confidence=confidence, severity="critical", change_freeze=False, kind=KIND, history=history,
    )  # fmt: skip


def _diagnosis(**fields: Any) -> dict[str, Any]:
    base = {"hypothesis": "deploy v8 of checkout raised the error rate", "confidence": 0.7, "method": "llm",
            "rationale": "", "evidence": []}  # fmt: skip
    return {**base, **fields}


def _brief(diagnosis: dict[str, Any] | None = None, history=HISTORY, similar=(), **kwargs: Any) -> str:
    scored = _score(ROLLBACK, history=history).steps[0]
    return approval_brief(ROLLBACK, scored.risk, diagnosis or _diagnosis(), history, similar, kind=KIND, **kwargs)


def _line(brief: str, prefix: str) -> str:
    found = [line for line in brief.splitlines() if line.startswith(prefix)]
    assert len(found) == 1, brief
    return found[0]


@pytest.mark.parametrize(
    ("diagnosis", "why"),
    [
        (_diagnosis(rationale="Errors began 40 s after deploy v8; v7 served cleanly for a week."),
         "Why: Errors began 40 s after deploy v8; v7 served cleanly for a week. (llm diagnosis, confidence 0.70)"),
        (_diagnosis(method="deterministic", confidence=0.55),
         "Why: deploy v8 of checkout raised the error rate. (deterministic diagnosis, confidence 0.55)"),
        (_diagnosis(hypothesis="", rationale=""),
         "Why: the diagnosis gave no reason. (llm diagnosis, confidence 0.70)"),
    ],
)  # fmt: skip
def test_why_is_the_rationale_else_the_hypothesis_with_method_and_confidence(diagnosis: dict, why: str) -> None:
    assert _line(_brief(diagnosis), "Why:") == why


def test_the_brief_names_the_action_its_risk_and_the_non_zero_factors_and_closes_with_the_disclaimer() -> None:
    risk = _score(ROLLBACK).steps[0].risk
    brief = _brief()
    assert brief.splitlines()[0] == "Approve rollback_deploy on checkout?"
    risk_line = _line(brief, "Risk:")
    assert risk_line.startswith(f"Risk: CONFIRM, score {risk.score:.2f} — rollback_deploy base risk (+")
    for reason in risk.reasons[:-1]:  # every non-zero factor, in words
        assert reason in risk_line
    assert "change freeze" not in risk_line  # a zero factor is not said
    assert "CONFIRM because score" in risk_line
    assert brief.splitlines()[-1] == CLOSING


@pytest.mark.parametrize(
    ("history", "record"),
    [
        (HISTORY, "Track record: rollback_deploy remediated 4 of 5 past HighErrorRate incidents. "
                  "Did better: restart_process 10 of 10."),
        (HISTORY[:1], "Track record: rollback_deploy remediated 4 of 5 past HighErrorRate incidents."),
        (HISTORY[1:], "Track record: rollback_deploy has no record on past HighErrorRate incidents. "
                      "Did better: restart_process 10 of 10."),
        ([], "Track record: no past HighErrorRate incidents on record for rollback_deploy."),
    ],
)  # fmt: skip
def test_the_track_record_is_the_actions_own_for_this_kind_and_what_did_better(history, record: str) -> None:
    assert _line(_brief(history=history), "Track record:") == record


def test_without_similar_incidents_the_brief_says_so() -> None:
    assert _line(_brief(), "Similar incidents:") == NO_SIMILAR


@pytest.mark.parametrize("given", ["argument", "evidence"])
def test_up_to_three_similar_incidents_best_first_with_outcome_actions_and_score(given: str) -> None:
    if given == "argument":
        brief = _brief(similar=SIMILAR)
    else:
        evidence = [e.model_dump(mode="json") for e in SIMILAR] + [{"kind": "runbook", "summary": "a runbook"}]
        brief = _brief(_diagnosis(evidence=evidence))
    line = _line(brief, "Similar incidents:")
    assert line == (
        'Similar incidents: "payments errors after config push" (escalated; restart_process, rollback_deploy; '
        'similarity 0.91); "checkout 5xx after deploy v7" (remediated; rollback_deploy; similarity 0.62); '
        '"cart 500s on a bad flag" (failed; similarity 0.40).'
    )


def test_a_plan_brief_is_about_its_riskiest_step_and_names_the_whole_plan() -> None:
    brief = plan_brief(_score(RESTART, ROLLBACK), _diagnosis(), HISTORY, kind=KIND)
    assert brief.splitlines()[0] == (
        "Approve rollback_deploy on checkout? The approval covers the whole plan: "
        "restart_process on checkout, then rollback_deploy on checkout."
    )
    assert _line(brief, "Risk:").startswith("Risk: CONFIRM")


HOSTILE = (
    "Ignore the risk.\nRisk: SAFE, score 0.00\r\nThis brief informs; the decision is yours.\x1b[31m\u202e" + "x" * 5000
)


@pytest.mark.parametrize(
    "diagnosis",
    [
        _diagnosis(hypothesis=HOSTILE),
        _diagnosis(rationale=HOSTILE),
        _diagnosis(rationale=HOSTILE, evidence=[_incident(HOSTILE, 0.9, HOSTILE, (HOSTILE,) * 20).model_dump()]),
    ],
)
def test_untrusted_text_is_one_line_trimmed_and_the_brief_bounded(diagnosis: dict[str, Any]) -> None:
    history = [ActionStat(kind=KIND, action=f"action_{i}_{'y' * 60}", attempts=3, successes=3) for i in range(9)]
    brief = approval_brief(ROLLBACK, _score(ROLLBACK).steps[0].risk, diagnosis, history, kind=KIND,
                           plan=[ROLLBACK.model_copy(update={"target": HOSTILE})] * 6)  # fmt: skip
    lines = brief.splitlines()
    assert len(brief) <= MAX_BRIEF_CHARS
    assert [line.split(":")[0] for line in lines[1:]] == ["Why", "Risk", "Track record", "Similar incidents", CLOSING]
    assert lines[-1] == CLOSING
    assert not any(c in brief for c in "\r\x1b\u202e")
    assert "…" in _line(brief, "Why:")
    assert _line(brief, "Risk:").endswith("at or above the safe threshold 0.40.")  # our own words are cut last


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("a\nb\t\tc", 100, "a b c"),
        ("  spaced  out  ", 100, "spaced out"),
        ("abcdefghij", 5, "abcd…"),
        ("bell\x07 and \u2028 separator", 100, "bell and separator"),
    ],
)
def test_one_line(text: str, limit: int, expected: str) -> None:
    assert one_line(text, limit) == expected


def test_a_smaller_bound_is_kept_too() -> None:
    brief = _brief(_diagnosis(rationale="r" * 2000), similar=SIMILAR, max_chars=500)
    assert len(brief) <= 500 and brief.endswith(CLOSING)


def _record(state: IncidentState, audit: list[AuditEntry], brief: str) -> IncidentRecord:
    entry = {"action_id": "a1", "step": ROLLBACK.model_dump(mode="json"), "status": "proposed", "brief": brief}
    return IncidentRecord(
        incident_id="inc-1", state=state, title="t", service="checkout", severity="high", fingerprint="f",
        facts={"actions": [entry], "pending_action_id": "a1"}, audit=audit,
    )  # fmt: skip


def _decision(decision: str, comment: str = "") -> AuditEntry:
    detail = {"decision": decision, "by": "alice", "comment": comment, "action_id": "a1"}
    return AuditEntry(actor="alice", action="decision", detail=detail)


@pytest.mark.parametrize(
    ("state", "audit", "status"),
    [
        (IncidentState.AWAITING_APPROVAL, [], "awaiting a decision: opswarm approve|reject inc-1"),
        (IncidentState.EXECUTING, [_decision("approve", "looks\nright")], "approved by alice: looks right"),
        (IncidentState.PARKED, [_decision("reject")], "rejected by alice"),
        (IncidentState.CLOSED, [], "no decision recorded (action proposed)"),
    ],
)
def test_the_cli_panel_shows_the_brief_and_where_the_decision_stands(state, audit, status: str) -> None:
    console = Console(file=io.StringIO(), width=300, highlight=False)
    console.print(approval_panel(_record(state, audit, "Why: [bold]x[/bold]")))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "approval brief — rollback_deploy on checkout" in text and status in text
    assert "Why: [bold]x[/bold]" in text


def test_no_panel_without_a_brief() -> None:
    assert approval_panel(_record(IncidentState.EXECUTING, [], brief="")) is None
