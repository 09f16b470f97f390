"""Risk scoring of a plan step: a pure function from a `RiskContext` to a `bus.events.RiskAssessment`.

    score = base risk of the action
          + environment factor          (prod +0.15, staging +0.05, dev 0)
          + blast radius factor         (instance 0, service +0.05, namespace +0.15, cluster +0.30)
          + (1 - confidence) × 0.30     (an unsure diagnosis makes any action riskier)
          + change freeze factor        (+0.20 while a freeze is in force)
          + severity factor             (critical +0.05, high +0.02: a failed action hurts more there)
          + history factor              (0.25 × (0.5 - success rate) once there are 3 attempts or more:
                                         9/10 successes gives -0.10, 1/10 gives +0.10)
    clipped to [0, 1].

The tier is FORBIDDEN when the action is not in the catalog or its floor is FORBIDDEN. Otherwise it is the higher
of the action's floor and the score's tier (score < safe_threshold → SAFE, else CONFIRM), and never SAFE during a
change freeze. Every factor is in `breakdown` (their sum is the score before clipping) and, when it is not zero,
in `reasons` as a sentence.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bus.events import PlanStep, RiskAssessment, RiskTier, Severity
from execution.catalog import ActionSpec, BlastRadius

Environment = Literal["prod", "staging", "dev"]

_TIER_ORDER: dict[RiskTier, int] = {"SAFE": 0, "CONFIRM": 1, "FORBIDDEN": 2}
_ENVIRONMENT_NAMES: dict[Environment, str] = {
    "prod": "production",
    "staging": "staging",
    "dev": "development",
}


class RiskPolicy(BaseModel):
    """The weights of risk scoring. Defaults as in the module docstring."""

    model_config = ConfigDict(frozen=True)

    environment: dict[Environment, float] = Field(default_factory=lambda: {"prod": 0.15, "staging": 0.05, "dev": 0.0})
    blast_radius: dict[BlastRadius, float] = Field(
        default_factory=lambda: {"instance": 0.0, "service": 0.05, "namespace": 0.15, "cluster": 0.30}
    )
    confidence_weight: float = Field(default=0.30, ge=0)
    change_freeze: float = Field(default=0.20, ge=0)
    severity: dict[Severity, float] = Field(
        default_factory=lambda: {"critical": 0.05, "high": 0.02, "warning": 0.0, "info": 0.0}
    )
    history_weight: float = Field(default=0.25, ge=0)
    # The success rate that neither raises nor lowers the score.
    history_neutral_rate: float = Field(default=0.5, ge=0, le=1)
    # Fewer attempts than this and history is not counted.
    history_min_attempts: int = Field(default=3, ge=1)
    # Base risk of an action the catalog does not know (it is FORBIDDEN anyway; the score says how bad).
    unknown_action_risk: float = Field(default=1.0, ge=0, le=1)
    # A score below this is SAFE (unless the floor or a change freeze says otherwise).
    safe_threshold: float = Field(default=0.40, gt=0, le=1)


class ActionHistory(BaseModel):
    """How this action fared before on this kind of incident."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(ge=0)
    successes: int = Field(ge=0)

    @model_validator(mode="after")
    def _successes_within_attempts(self) -> ActionHistory:
        if self.successes > self.attempts:
            raise ValueError("successes cannot exceed attempts")
        return self


class RiskContext(BaseModel):
    """Everything risk scoring looks at."""

    model_config = ConfigDict(frozen=True)

    step: PlanStep
    spec: ActionSpec | None
    environment: Environment
    confidence: float = Field(ge=0, le=1)
    change_freeze: bool = False
    history: ActionHistory | None = None
    severity: Severity | None = None


def assess_risk(context: RiskContext, policy: RiskPolicy | None = None) -> RiskAssessment:
    """Score `context.step` and decide its tier; see the module docstring for the policy."""
    policy = policy or RiskPolicy()
    step, spec = context.step, context.spec
    factors: list[tuple[str, float, str]] = []  # (breakdown key, value, reason sentence or "" for none)

    def add(key: str, value: float, sentence: str) -> None:
        factors.append((key, value, f"{sentence} ({value:+.2f})" if value or key == "base" else ""))

    if spec is None:
        add("base", policy.unknown_action_risk, f"{step.action} is not in the action catalog")
        add("blast_radius", policy.blast_radius["cluster"], "unknown blast radius, taken as cluster-wide")
    else:
        add("base", spec.base_risk, f"{spec.name} base risk")
        add("blast_radius", policy.blast_radius[spec.blast_radius], f"blast radius: {spec.blast_radius}")
    env_name = _ENVIRONMENT_NAMES[context.environment]
    add("environment", policy.environment[context.environment], f"{env_name} environment")
    add(
        "confidence",
        (1.0 - context.confidence) * policy.confidence_weight,
        f"diagnosis confidence {context.confidence:.2f}",
    )
    add("change_freeze", policy.change_freeze if context.change_freeze else 0.0, "change freeze in force")
    severity = context.severity
    add("severity", policy.severity[severity] if severity else 0.0, f"{severity} severity incident")
    add("history", *_history_factor(step.action, context.history, policy))

    raw = sum(value for _, value, _ in factors)
    score = min(1.0, max(0.0, raw))
    reasons = [sentence for _, _, sentence in factors if sentence]
    tier, tier_reason = _tier(context, score, policy)
    reasons.append(tier_reason)
    return RiskAssessment(
        score=round(score, 4),
        tier=tier,
        breakdown={key: round(value, 4) for key, value, _ in factors},
        reasons=reasons,
    )


def _history_factor(action: str, history: ActionHistory | None, policy: RiskPolicy) -> tuple[float, str]:
    if history is None or history.attempts < policy.history_min_attempts:
        return 0.0, ""
    rate = history.successes / history.attempts
    value = policy.history_weight * (policy.history_neutral_rate - rate)
    return value, f"{action} succeeded {history.successes}/{history.attempts} times on this incident kind"


def _tier(context: RiskContext, score: float, policy: RiskPolicy) -> tuple[RiskTier, str]:
    spec = context.spec
    if spec is None:
        return "FORBIDDEN", f"FORBIDDEN: {context.step.action} is not in the action catalog"
    floor = spec.floor_for(context.step.params)
    if floor == "FORBIDDEN":
        return "FORBIDDEN", f"FORBIDDEN: the catalog forbids {spec.name} (never automated)"
    if score < policy.safe_threshold:
        scored: RiskTier = "SAFE"
        why = f"score {score:.2f} below the safe threshold {policy.safe_threshold:.2f}"
    else:
        scored = "CONFIRM"
        why = f"score {score:.2f} at or above the safe threshold {policy.safe_threshold:.2f}"
    tier = max(floor, scored, key=_TIER_ORDER.__getitem__)
    if tier != scored:
        why += f", but the catalog floor of {spec.name} is {floor}"
    if context.change_freeze and tier == "SAFE":
        tier = "CONFIRM"
        why += ", but a change freeze is in force"
    return tier, f"{tier}: {why}"
