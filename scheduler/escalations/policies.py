"""Escalation policies: who hears about a pending decision, through which channels, in which order, for how long.

One file (YAML or TOML) holds the channels (`channels`, by name) and the policies; the first policy whose `match`
accepts an incident's service and severity applies, else `default`. A policy's tiers are asked one after another:
tier i is notified when the earlier tiers' timeouts have run out, reminded every `remind_every_s` inside its own
window, and when the last tier's window ends the question expires (`on_final_timeout`: deny it, or keep it open on
the approvals page). `escalation_steps` turns a policy into those steps; each has a stable id (`step_id`), so a
durable timer per step survives a restart without being lost or run twice.

Everything here is pure except `load_policies`, which reads the file; every problem with it becomes a
`PolicyFileError` that names the file and, for each problem, where it is (`policies[0].tiers[1].timeout_s`).
"""

from __future__ import annotations

import fnmatch
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bus.events import Severity
from scheduler.escalations.notifications import ChannelConfig

log = logging.getLogger(__name__)

SEVERITIES: tuple[Severity, ...] = ("critical", "high", "warning", "info")
SUFFIXES = (".yaml", ".yml", ".toml")
# The `type` of every channel kind; pydantic puts it in the location of a channel's errors, we leave it out.
_CHANNEL_TYPES = frozenset(model.model_fields["type"].default for model in get_args(get_args(ChannelConfig)[0]))


class PolicyFileError(ValueError):
    """The policy file cannot be used; the message says which file and what to fix."""


class _Model(BaseModel):
    # Frozen, and unknown keys are errors: a typo ("timout_s") must not silently fall back to a default.
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tier(_Model):
    name: Annotated[str, Field(min_length=1)]
    # E-mail addresses, handles, names: whom the channels address.
    recipients: list[str] = []
    # Names of channels defined in the same file; none: the question only shows on the approvals page.
    channels: list[str] = []
    timeout_s: Annotated[float, Field(gt=0)]
    # Reminders inside the tier's window; None: none.
    remind_every_s: Annotated[float | None, Field(gt=0)] = None


class PolicyMatch(_Model):
    # fnmatch globs, case-sensitive; an empty list would match nothing, which is always a mistake.
    services: Annotated[list[str], Field(min_length=1)] = ["*"]
    severities: Annotated[list[Severity], Field(min_length=1)] = list(SEVERITIES)

    def accepts(self, service: str, severity: str) -> bool:
        return severity in self.severities and any(fnmatch.fnmatchcase(service, glob) for glob in self.services)


class EscalationPolicy(_Model):
    name: Annotated[str, Field(min_length=1)]
    match: PolicyMatch = PolicyMatch()
    tiers: Annotated[list[Tier], Field(min_length=1)]
    on_final_timeout: Literal["deny", "keep_waiting"] = "deny"
    # The risk score at or above which two different approvers are needed; None: never.
    four_eyes_min_score: Annotated[float | None, Field(ge=0, le=1)] = 0.7
    requester_may_approve: bool = False

    @model_validator(mode="after")
    def _unique_tier_names(self) -> EscalationPolicy:
        names = [tier.name for tier in self.tiers]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"policy {self.name!r}: tier names must be unique, repeated: {', '.join(duplicates)}")
        return self

    @property
    def total_timeout_s(self) -> float:
        return sum(tier.timeout_s for tier in self.tiers)


DEFAULT_POLICY = EscalationPolicy(
    name="default",
    tiers=[Tier(name="on-call", timeout_s=900, remind_every_s=300)],
    on_final_timeout="deny",
)


class EscalationPolicies(_Model):
    channels: dict[str, ChannelConfig] = {}
    policies: list[EscalationPolicy] = []
    default: EscalationPolicy = DEFAULT_POLICY

    @model_validator(mode="after")
    def _consistent(self) -> EscalationPolicies:
        names = [policy.name for policy in self.policies]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"policy names must be unique, repeated: {', '.join(duplicates)}")
        known = ", ".join(sorted(self.channels)) or "(none defined)"
        problems = [
            f"policy {policy.name!r}, tier {tier.name!r}: unknown channel {channel!r} (known channels: {known})"
            for policy in [*self.policies, self.default]
            for tier in policy.tiers
            for channel in tier.channels
            if channel not in self.channels
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def policy_for(self, service: str, severity: str) -> EscalationPolicy:
        """The first policy whose match accepts both, else the default."""
        return next((p for p in self.policies if p.match.accepts(service, severity)), self.default)


def four_eyes_needed(policy: EscalationPolicy, risk_score: float) -> bool:
    return policy.four_eyes_min_score is not None and risk_score >= policy.four_eyes_min_score


# --- the schedule -----------------------------------------------------------------------------------------------

StepKind = Literal["notify", "remind", "expire"]
_KIND_ORDER: dict[str, int] = {"notify": 0, "remind": 1, "expire": 2}


@dataclass(frozen=True)
class EscalationStep:
    kind: StepKind
    # The index of the tier in the policy (the last tier's for "expire").
    tier: int
    # Epoch seconds, like `started_at`.
    at: float
    # n for the tier's n-th reminder, 0 otherwise.
    reminder: int = 0


def escalation_steps(policy: EscalationPolicy, started_at: float) -> list[EscalationStep]:
    """Every step of the policy for a question asked at `started_at`, sorted by time.

    Reminders fall strictly inside their tier's window: one due exactly when the tier ends is not sent, the next
    tier's notification (or the expiry) is. Times are computed from the tier's start (no accumulated drift).
    """
    steps: list[EscalationStep] = []
    start = started_at
    for index, tier in enumerate(policy.tiers):
        steps.append(EscalationStep("notify", index, start))
        if tier.remind_every_s is not None:
            n = 1
            while n * tier.remind_every_s < tier.timeout_s:
                steps.append(EscalationStep("remind", index, start + n * tier.remind_every_s, reminder=n))
                n += 1
        start += tier.timeout_s
    steps.append(EscalationStep("expire", len(policy.tiers) - 1, start))
    return sorted(steps, key=lambda s: (s.at, s.tier, _KIND_ORDER[s.kind], s.reminder))


def step_id(incident_id: str, action_id: str | None, step: EscalationStep) -> str:
    """A stable id per step of one decision: the durable timer's id."""
    return f"esc:{incident_id}:{action_id or 'none'}:{step.kind}:{step.tier}:{step.reminder}"


# --- the file ---------------------------------------------------------------------------------------------------


def load_policies(path: Path) -> EscalationPolicies:
    """Read and check a policy file (.yaml/.yml or .toml); any problem raises PolicyFileError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise PolicyFileError(f"{path}: unknown extension {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise PolicyFileError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise PolicyFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if mode & 0o077:
        # The file may hold channel secrets (webhook URLs, SMTP password, routing keys).
        log.warning(
            "escalation policy file readable by group or others", extra={"path": str(path), "mode": oct(mode & 0o777)}
        )
    data = _parse_toml(path, text) if suffix == ".toml" else _parse_yaml(path, text)
    if data is None or data == {}:
        raise PolicyFileError(f"{path}: the file is empty; expected `channels`, `policies` and/or `default`")
    if not isinstance(data, dict):
        raise PolicyFileError(f"{path}: the top level must be a mapping, not {type(data).__name__}")
    try:
        return EscalationPolicies.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors(include_input=False, include_url=False)]
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise PolicyFileError(f"{path}: invalid escalation policies ({count}):\n{lines}") from None


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = ": ".join(part for part in (exc.context, exc.problem) if part)
        raise PolicyFileError(f"{path}: YAML syntax error{where}: {what}") from None
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path}: YAML error: {exc}") from None


def _parse_toml(path: Path, text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries the place: "Invalid value (at line 3, column 11)".
        raise PolicyFileError(f"{path}: TOML syntax error: {exc}") from None


def _describe(error: Any) -> str:
    """`policies[0].tiers[1].timeout_s: Input should be greater than 0`; never the input (it may be a secret)."""
    loc = list(error["loc"])
    if len(loc) >= 3 and loc[0] == "channels" and loc[2] in _CHANNEL_TYPES:
        del loc[2]  # the union's tag: "channels.pager.routing_key", not "channels.pager.pagerduty.routing_key"
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
