"""The action catalog: every action the swarm may name in a plan, its params schema, base risk and floor tier.

A plan step (`bus.events.PlanStep`) names an action from here. `Catalog.validate_step` lists what stops a step
from running: an unknown action, params its schema rejects, or a FORBIDDEN action. FORBIDDEN actions
(delete_data, failover_database, change_security_policy) are in the catalog only so that a plan can name them
and be refused with a clear reason; no adapter exists for them.

An action's floor is the lowest tier it can ever get from risk scoring. `safe_when` lowers a CONFIRM floor to
SAFE for given param values: run_allowlisted_script is CONFIRM unless the script is one marked safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bus.events import PlanStep, RiskTier
from execution.results import describe_validation_error

BlastRadius = Literal["instance", "service", "namespace", "cluster"]


class ActionParams(BaseModel):
    """Base of every action's params: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RestartProcessParams(ActionParams):
    # How long the process gets to exit after SIGTERM before it is killed.
    grace_s: float = Field(default=10.0, gt=0, le=300)


class ScaleParams(ActionParams):
    replicas: int = Field(ge=1, le=50)


class RollbackDeployParams(ActionParams):
    to_version: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ClearDiskParams(ActionParams):
    path: str = Field(min_length=1, max_length=4096)
    min_age_s: float = Field(default=3600.0, ge=60)
    dry_run: bool = False

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "\0" in value or not PurePosixPath(value).is_absolute():
            raise ValueError("must be an absolute path")
        return value


class FlushConnectionPoolParams(ActionParams):
    pool: str | None = Field(default=None, max_length=128)


class RunAllowlistedScriptParams(ActionParams):
    script: str = Field(min_length=1, max_length=128)
    args: list[str] = Field(default_factory=list, max_length=32)


class NamedOnlyParams(BaseModel):
    """Params of a FORBIDDEN action: anything goes, since the action is refused whatever it says."""

    model_config = ConfigDict(frozen=True, extra="allow")


class ActionSpec(BaseModel):
    """One catalog entry."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    base_risk: float = Field(ge=0, le=1)
    tier_floor: RiskTier
    params: type[BaseModel]
    reversible: bool
    rollback_action: str | None = None
    blast_radius: BlastRadius
    # Param name → values for which the floor is SAFE instead of CONFIRM.
    safe_when: dict[str, frozenset[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ActionSpec:
        if self.reversible != (self.rollback_action is not None):
            raise ValueError("a reversible action names its rollback_action, and only a reversible one does")
        if self.safe_when and self.tier_floor != "CONFIRM":
            raise ValueError("safe_when only lowers a CONFIRM floor")
        return self

    def floor_for(self, params: Mapping[str, Any]) -> RiskTier:
        """The floor for a step with these params (`safe_when` applied)."""
        for param, safe_values in self.safe_when.items():
            if str(params.get(param)) in safe_values:
                return "SAFE"
        return self.tier_floor

    def validate_params(self, params: Mapping[str, Any]) -> list[str]:
        try:
            self.params.model_validate(dict(params))
        except ValidationError as exc:
            return [f"invalid params for {self.name}: {describe_validation_error(exc)}"]
        return []


class Catalog:
    """The actions a plan may name, by name."""

    def __init__(self, specs: Iterable[ActionSpec]) -> None:
        self._specs: dict[str, ActionSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"action {spec.name!r} is in the catalog twice")
            self._specs[spec.name] = spec
        for spec in self._specs.values():
            if spec.rollback_action is not None and spec.rollback_action not in self._specs:
                raise ValueError(f"{spec.name}: rollback action {spec.rollback_action!r} is not in the catalog")

    def get(self, name: str) -> ActionSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def validate_step(self, step: PlanStep) -> list[str]:
        """What stops `step` from running, as sentences; empty when it may run (subject to its risk tier)."""
        spec = self._specs.get(step.action)
        if spec is None:
            return [f"unknown action {step.action!r}: not in the catalog"]
        if spec.tier_floor == "FORBIDDEN":
            return [f"action {step.action!r} is FORBIDDEN: never run automatically, a human must do it"]
        return spec.validate_params(step.params)


# name, params, base risk, floor, blast radius, rollback action (None: not reversible), description
_STANDARD_ACTIONS: list[tuple[str, type[BaseModel], float, RiskTier, BlastRadius, str | None, str]] = [
    ("restart_process", RestartProcessParams, 0.10, "SAFE", "instance", None,
     "Restart a managed process (SIGTERM, grace period, SIGKILL, start again)."),
    ("scale", ScaleParams, 0.30, "SAFE", "service", "scale",
     "Set the number of replicas of a service."),
    ("rollback_deploy", RollbackDeployParams, 0.40, "CONFIRM", "service", "rollback_deploy",
     "Run a service's previously deployed version again."),
    ("clear_disk", ClearDiskParams, 0.20, "SAFE", "instance", None,
     "Delete regular files older than min_age_s directly inside an allowlisted directory."),
    ("flush_connection_pool", FlushConnectionPoolParams, 0.10, "SAFE", "service", None,
     "Ask a service's admin endpoint to drop and re-open its connection pool."),
    ("run_allowlisted_script", RunAllowlistedScriptParams, 0.35, "CONFIRM", "service", None,
     "Run a script registered in the script allowlist, with args its patterns accept."),
    ("delete_data", NamedOnlyParams, 1.0, "FORBIDDEN", "namespace", None,
     "Delete stored data. Never automated."),
    ("failover_database", NamedOnlyParams, 0.9, "FORBIDDEN", "cluster", "failover_database",
     "Promote a database replica. Never automated."),
    ("change_security_policy", NamedOnlyParams, 0.9, "FORBIDDEN", "cluster", "change_security_policy",
     "Change firewall, IAM or network policy. Never automated."),
]


def default_specs(*, safe_scripts: Iterable[str] = ()) -> list[ActionSpec]:
    """The standard catalog entries. `safe_scripts`: allowlisted scripts that run_allowlisted_script may run SAFE."""
    return [
        ActionSpec(
            name=name,
            description=description,
            base_risk=base_risk,
            tier_floor=floor,
            params=params,
            reversible=rollback_action is not None,
            rollback_action=rollback_action,
            blast_radius=blast_radius,
            safe_when={"script": frozenset(safe_scripts)} if name == "run_allowlisted_script" else {},
        )
        for name, params, base_risk, floor, blast_radius, rollback_action, description in _STANDARD_ACTIONS
    ]


def default_catalog(*, safe_scripts: Iterable[str] = ()) -> Catalog:
    return Catalog(default_specs(safe_scripts=safe_scripts))
