"""Risk scoring: the policy table, the tier rules, and a breakdown that adds up to the score."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bus.events import PlanStep
from execution.catalog import default_catalog
from execution.risk import ActionHistory, RiskContext, RiskPolicy, assess_risk

CATALOG = default_catalog(safe_scripts=["rotate_logs"])


def context(action: str, *, params: dict[str, Any] | None = None, **fields: Any) -> RiskContext:
    fields.setdefault("environment", "dev")
    fields.setdefault("confidence", 1.0)
    plan_step = PlanStep(action=action, target="checkout", params=params or {})
    return RiskContext(step=plan_step, spec=CATALOG.get(action), **fields)


def history(successes: int, attempts: int) -> ActionHistory:
    return ActionHistory(attempts=attempts, successes=successes)


# (id, context, score, tier). Defaults: dev, confidence 1.0, no freeze, no history, no severity.
TABLE = [
    ("restart-dev-sure", context("restart_process"), 0.10, "SAFE"),
    ("restart-prod-sure", context("restart_process", environment="prod", confidence=0.9), 0.28, "SAFE"),
    ("restart-staging", context("restart_process", environment="staging"), 0.15, "SAFE"),
    ("restart-prod-unsure", context("restart_process", environment="prod", confidence=0.3), 0.46, "CONFIRM"),
    ("restart-freeze", context("restart_process", change_freeze=True), 0.30, "CONFIRM"),
    ("restart-critical", context("restart_process", severity="critical"), 0.15, "SAFE"),
    (
        "restart-good-history",
        context("restart_process", environment="prod", confidence=0.45, history=history(9, 10)),
        0.315,
        "SAFE",
    ),
    (
        "restart-poor-history",
        context("restart_process", environment="prod", confidence=0.45, history=history(1, 10)),
        0.515,
        "CONFIRM",
    ),
    (
        "restart-too-little-history",
        context("restart_process", environment="prod", confidence=0.45, history=history(0, 2)),
        0.415,
        "CONFIRM",
    ),
    ("restart-clipped-at-zero", context("restart_process", history=history(10, 10)), 0.0, "SAFE"),
    ("scale-dev", context("scale", params={"replicas": 3}), 0.35, "SAFE"),
    ("scale-prod", context("scale", params={"replicas": 3}, environment="prod"), 0.50, "CONFIRM"),
    ("rollback-floor", context("rollback_deploy", history=history(10, 10)), 0.325, "CONFIRM"),
    ("safe-script", context("run_allowlisted_script", params={"script": "rotate_logs"}, history=history(10, 10)),
     0.275, "SAFE"),
    ("unsafe-script", context("run_allowlisted_script", params={"script": "vacuum"}, history=history(10, 10)),
     0.275, "CONFIRM"),
    ("delete-data", context("delete_data"), 1.0, "FORBIDDEN"),
    ("failover", context("failover_database", environment="prod", confidence=0.2), 1.0, "FORBIDDEN"),
    ("unknown-action", context("reboot_host"), 1.0, "FORBIDDEN"),
]


@pytest.mark.parametrize(("risk_context", "score", "tier"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_policy_table(risk_context: RiskContext, score: float, tier: str) -> None:
    assessment = assess_risk(risk_context)
    assert assessment.score == pytest.approx(score, abs=1e-4)
    assert assessment.tier == tier


@pytest.mark.parametrize("risk_context", [row[1] for row in TABLE], ids=[row[0] for row in TABLE])
def test_breakdown_has_every_factor_and_sums_to_the_score_before_clipping(risk_context: RiskContext) -> None:
    assessment = assess_risk(risk_context)
    assert set(assessment.breakdown) == {
        "base", "environment", "blast_radius", "confidence", "change_freeze", "severity", "history"
    }
    raw = sum(assessment.breakdown.values())
    assert assessment.score == pytest.approx(min(1.0, max(0.0, raw)), abs=1e-3)


def test_reasons_are_sentences_with_each_contribution() -> None:
    assessment = assess_risk(
        context("restart_process", environment="prod", confidence=0.45, history=history(9, 10), change_freeze=True)
    )
    assert assessment.reasons == [
        "restart_process base risk (+0.10)",
        "production environment (+0.15)",
        "diagnosis confidence 0.45 (+0.17)",
        "change freeze in force (+0.20)",
        "restart_process succeeded 9/10 times on this incident kind (-0.10)",
        "CONFIRM: score 0.52 at or above the safe threshold 0.40",
    ]


@pytest.mark.parametrize(
    ("risk_context", "last_reason"),
    [
        (context("reboot_host"), "FORBIDDEN: reboot_host is not in the action catalog"),
        (context("delete_data"), "FORBIDDEN: the catalog forbids delete_data (never automated)"),
        (
            context("rollback_deploy", history=history(10, 10)),
            "CONFIRM: score 0.33 below the safe threshold 0.40, but the catalog floor of rollback_deploy is CONFIRM",
        ),
        (context("restart_process", change_freeze=True), "CONFIRM: score 0.30 below the safe threshold 0.40, "
         "but a change freeze is in force"),
    ],
)
def test_the_last_reason_says_why_the_tier(risk_context: RiskContext, last_reason: str) -> None:
    assert assess_risk(risk_context).reasons[-1] == last_reason


def test_a_change_freeze_never_leaves_a_step_safe_whatever_the_weights() -> None:
    lenient = RiskPolicy(change_freeze=0.0, safe_threshold=1.0)
    assert assess_risk(context("restart_process"), lenient).tier == "SAFE"
    assert assess_risk(context("restart_process", change_freeze=True), lenient).tier == "CONFIRM"


def test_policy_weights_change_the_score() -> None:
    strict = RiskPolicy(environment={"prod": 0.5, "staging": 0.2, "dev": 0.1}, safe_threshold=0.2)
    assessment = assess_risk(context("restart_process"), strict)
    assert assessment.breakdown["environment"] == pytest.approx(0.1)
    assert assessment.score == pytest.approx(0.2) and assessment.tier == "CONFIRM"


@pytest.mark.parametrize(("successes", "attempts"), [(3, 2), (-1, 2), (1, -1)])
def test_impossible_history_is_rejected(successes: int, attempts: int) -> None:
    with pytest.raises(ValidationError):
        ActionHistory(attempts=attempts, successes=successes)


@pytest.mark.parametrize("confidence", [-0.1, 1.1])
def test_confidence_outside_zero_to_one_is_rejected(confidence: float) -> None:
    with pytest.raises(ValidationError):
        context("restart_process", confidence=confidence)
