"""Plan scoring and arbitration order: pure functions, parametrized."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.coordination.plan_scoring import (
    environment_of,
    history_for,
    in_change_freeze,
    score_plan,
)
from bus.events import ActionStat, PlanStep, RemediationPlan
from execution.catalog import default_catalog
from execution.risk import RiskPolicy
from scheduler.arbitration import waiting_priority

CATALOG = default_catalog()


def _score(
    *steps: PlanStep,
    confidence: float = 0.9,
    freeze: bool = False,
    env: str = "dev",
    history=(),
):
    return score_plan(
        RemediationPlan(steps=list(steps)), catalog=CATALOG, policy=RiskPolicy(), environment=env,  # type: ignore[arg-type]
        confidence=confidence, severity="warning", change_freeze=freeze, kind="ServiceDown", history=history,
    )  # fmt: skip


RESTART = PlanStep(action="restart_process", target="checkout")
ROLLBACK = PlanStep(action="rollback_deploy", target="checkout", params={"to_version": "v1"})
FAILOVER = PlanStep(action="failover_database", target="orders-db")
DELETE = PlanStep(action="delete_data", target="orders-db")
UNKNOWN = PlanStep(action="reboot_datacenter", target="dc1")
BAD_PARAMS = PlanStep(action="clear_disk", target="checkout", params={"path": "relative/path"})


@pytest.mark.parametrize(
    ("steps", "tier"),
    [
        ((RESTART,), "SAFE"),
        ((ROLLBACK,), "CONFIRM"),
        ((RESTART, ROLLBACK), "CONFIRM"),
        ((FAILOVER,), "FORBIDDEN"),
        ((DELETE,), "FORBIDDEN"),
        ((RESTART, FAILOVER), "FORBIDDEN"),
        ((UNKNOWN,), "FORBIDDEN"),
        ((BAD_PARAMS,), "FORBIDDEN"),
    ],
)
def test_a_plan_takes_the_highest_tier_of_its_steps(steps: tuple[PlanStep, ...], tier: str) -> None:
    assert _score(*steps).tier == tier


@pytest.mark.parametrize(
    ("kwargs", "tier"),
    [
        ({}, "SAFE"),
        ({"freeze": True}, "CONFIRM"),
        ({"confidence": 0.0, "env": "prod"}, "CONFIRM"),
        ({"history": [ActionStat(kind="ServiceDown", action="restart_process", attempts=10, successes=0)],
          "env": "prod", "confidence": 0.5}, "CONFIRM"),
    ],
)  # fmt: skip
def test_context_raises_a_safe_restart_to_confirm(kwargs: dict, tier: str) -> None:
    assert _score(RESTART, **kwargs).tier == tier


def test_the_breakdown_is_kept_per_step() -> None:
    scored = _score(RESTART, ROLLBACK)
    assert [s.step.action for s in scored.steps] == [
        "restart_process",
        "rollback_deploy",
    ]
    assert {"base", "environment", "blast_radius", "confidence", "history"} <= set(scored.steps[0].risk.breakdown)
    assert scored.highest.tier == "CONFIRM"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [({"env": "production"}, "prod"), ({"environment": "Staging"}, "staging"), ({"env": "test"}, "dev"),
     ({"env": "moon"}, "prod"), ({}, "prod")],
)  # fmt: skip
def test_environment_from_labels(labels: dict[str, str], expected: str) -> None:
    assert environment_of(labels, "prod") == expected


def test_history_matches_kind_and_action() -> None:
    stats = [ActionStat(kind="DiskFull", action="restart_process", attempts=5, successes=1),
             ActionStat(kind="ServiceDown", action="restart_process", attempts=4, successes=4)]  # fmt: skip
    found = history_for("restart_process", "ServiceDown", stats)
    assert found is not None and (found.attempts, found.successes) == (4, 4)
    assert history_for("scale", "ServiceDown", stats) is None


@pytest.mark.parametrize(("offset_h", "inside"), [(-2, False), (0, True), (1.5, False)])
def test_change_freeze_windows(offset_h: float, inside: bool) -> None:
    start = datetime(2026, 12, 24, tzinfo=UTC)
    window = [(start, start + timedelta(hours=1))]
    assert in_change_freeze(start + timedelta(hours=offset_h), window) is inside


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("critical", 0.9, 100.0), ("warning", 0.1, 1.0)),  # severity first
        (("high", 0.2, 100.0), ("high", 0.3, 1.0)),  # then lower risk
        (("high", 0.2, 1.0), ("high", 0.2, 2.0)),  # then arrival
    ],
)
def test_waiting_order(first: tuple[str, float, float], second: tuple[str, float, float]) -> None:
    assert waiting_priority(*first) < waiting_priority(*second)
