"""Scoring a whole plan: every step through the risk policy, and the plan's tier as the highest of its steps.

Pure functions of the plan, the incident's facts and the coordination settings, so they are unit tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bus.events import (
    ActionStat,
    PlanStep,
    RemediationPlan,
    RiskAssessment,
    RiskTier,
    Severity,
)
from execution.catalog import Catalog
from execution.risk import (
    ActionHistory,
    Environment,
    RiskContext,
    RiskPolicy,
    assess_risk,
)

_TIER_ORDER: dict[RiskTier, int] = {"SAFE": 0, "CONFIRM": 1, "FORBIDDEN": 2}
_ENVIRONMENTS: dict[str, Environment] = {
    "prod": "prod", "production": "prod", "staging": "staging", "stage": "staging", "dev": "dev",
    "development": "dev", "test": "dev",
}  # fmt: skip


@dataclass(frozen=True)
class StepScore:
    step: PlanStep
    risk: RiskAssessment


@dataclass(frozen=True)
class PlanScore:
    steps: tuple[StepScore, ...]

    @property
    def tier(self) -> RiskTier:
        return max((s.risk.tier for s in self.steps), key=_TIER_ORDER.__getitem__)

    @property
    def forbidden(self) -> tuple[StepScore, ...]:
        return tuple(s for s in self.steps if s.risk.tier == "FORBIDDEN")

    @property
    def highest(self) -> RiskAssessment:
        """The riskiest step's assessment (the one a human is shown first)."""
        return max(self.steps, key=lambda s: (_TIER_ORDER[s.risk.tier], s.risk.score)).risk


def environment_of(labels: dict[str, str], default: Environment) -> Environment:
    """The environment an incident runs in, from its alert labels (`env` or `environment`)."""
    for key in ("env", "environment"):
        value = labels.get(key, "").strip().lower()
        if value in _ENVIRONMENTS:
            return _ENVIRONMENTS[value]
    return default


def history_for(action: str, kind: str | None, stats: Sequence[ActionStat]) -> ActionHistory | None:
    for stat in stats:
        if stat.action == action and (kind is None or stat.kind == kind):
            return ActionHistory(attempts=stat.attempts, successes=min(stat.successes, stat.attempts))
    return None


def in_change_freeze(now: datetime, windows: Sequence[tuple[datetime, datetime]]) -> bool:
    return any(start <= now < end for start, end in windows)


def score_plan(
    plan: RemediationPlan,
    *,
    catalog: Catalog,
    policy: RiskPolicy,
    environment: Environment,
    confidence: float,
    severity: Severity | None,
    change_freeze: bool,
    kind: str | None,
    history: Sequence[ActionStat],
) -> PlanScore:
    scores = []
    for step in plan.steps:
        context = RiskContext(
            step=step,
            spec=catalog.get(step.action),
            environment=environment,
            confidence=confidence,
            change_freeze=change_freeze,
            history=history_for(step.action, kind, history),
            severity=severity,
        )
        risk = assess_risk(context, policy)
        problems = catalog.validate_step(step) if context.spec is not None else []
        if problems and risk.tier != "FORBIDDEN":
            # A step the catalog cannot run as written is never executed: treat it as forbidden, and say why.
            risk = risk.model_copy(update={"tier": "FORBIDDEN", "reasons": [*risk.reasons, *problems]})
        scores.append(StepScore(step, risk))
    return PlanScore(tuple(scores))
