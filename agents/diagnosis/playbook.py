"""The deterministic playbook: rules, as data, that turn an alert into a hypothesis, metric probes and a plan.

A rule matches the incident's kind (its primary alert's name), optionally label values, and optionally a
recent change of some kind (one that names its previous version: what a rollback goes back to). Rules are
tried in order and the first match wins, so a rule that needs a recent deploy comes before the plain one.

Texts in a rule are templates. `{service}`, `{namespace}` and `{kind}` name the incident's; `{labels[NAME]}`
an alert label (annotations passed in the request's context fill the labels' gaps, and the rule's
`label_defaults` fill what is still missing); `{change[FIELD]}` a field of the matched change. Nothing else in
braces is touched, so PromQL selectors such as `up{service="{service}"}` read naturally; values put into a
query are escaped for PromQL strings. A template naming a value that is missing does not render: a plan's steps
without it mean no plan, and the reason is said.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bus.events import AlertRef, ChangeRecorded, DiagnosisRequested, PlanStep, RemediationPlan, VerifySpec

Comparator = Literal["<", "<=", ">", ">=", "=="]
ChangeKind = Literal["deploy", "config", "feature_flag", "infrastructure"]

_PLACEHOLDER = re.compile(r"\{(service|namespace|kind)\}|\{(labels|change)\[([A-Za-z_][A-Za-z0-9_]*)\]\}")


class MissingValue(Exception):
    """A template names a value the incident does not have (say, a label the alert lacks)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _RuleModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricProbe(_RuleModel):
    """A Prometheus instant query; its value `comparator` `threshold` means the metric confirms the alert."""

    name: str = Field(min_length=1)
    query: str = Field(min_length=1)
    comparator: Comparator
    threshold: str | float


class StepTemplate(_RuleModel):
    action: str = Field(min_length=1)
    target: str = "{service}"
    # String values are templates; other values are used as they are.
    params: dict[str, Any] = Field(default_factory=dict)
    # Params left out, rather than failing the step, when a value they name is missing.
    optional_params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    retries: int = Field(default=0, ge=0, le=5)


class VerifyTemplate(_RuleModel):
    query: str = Field(min_length=1)
    comparator: Comparator
    threshold: str | float
    window_s: str | float = 60.0


class PlaybookRule(_RuleModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    alertnames: list[str] = Field(min_length=1)
    # Labels the alert must carry with exactly these values.
    labels: dict[str, str] = Field(default_factory=dict)
    requires_change: ChangeKind | None = None
    # Values for labels the alert does not carry; templates of {service}, {namespace} and {kind} only.
    label_defaults: dict[str, str] = Field(default_factory=dict)
    hypothesis: str = Field(min_length=1)
    confidence: float = Field(ge=0, le=1)
    probes: list[MetricProbe] = Field(default_factory=list)
    steps: list[StepTemplate] = Field(default_factory=list)
    rollback: list[StepTemplate] = Field(default_factory=list)
    verify: VerifyTemplate | None = None

    def actions(self) -> list[str]:
        return [step.action for step in self.steps]


@dataclass(frozen=True)
class Situation:
    """What the playbook knows of an incident: its service and kind, the alert's labels, recent changes."""

    service: str
    kind: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # The service's recent changes, newest first.
    changes: Sequence[ChangeRecorded] = ()


def primary_alert(request: DiagnosisRequested) -> AlertRef | None:
    """The alert the incident is named after: a firing one of its kind, else any firing one, else the first."""
    firing = [alert for alert in request.alerts if alert.status == "firing"]
    for alert in firing:
        if alert.alertname == request.kind:
            return alert
    return (firing or list(request.alerts) or [None])[0]


def situation_of(request: DiagnosisRequested, changes: Sequence[ChangeRecorded]) -> Situation:
    primary = primary_alert(request)
    annotations = request.context.get("annotations")
    labels = {k: v for k, v in annotations.items() if isinstance(v, str)} if isinstance(annotations, dict) else {}
    labels.update(primary.labels if primary else {})
    kind = request.kind or (primary.alertname if primary else "") or "unknown"
    return Situation(
        service=request.service,
        kind=kind,
        namespace=request.namespace or labels.get("namespace"),
        labels=labels,
        changes=changes,
    )


@dataclass(frozen=True)
class Selection:
    """The rule that matched, the change it matched on (if it needs one), and the values its templates read."""

    rule: PlaybookRule
    situation: Situation
    change: ChangeRecorded | None
    labels: Mapping[str, str]

    def render(self, template: str, *, promql: bool = False) -> str:
        """`template` with its placeholders replaced; MissingValue when one names nothing."""

        def value_of(match: re.Match[str]) -> str:
            scalar, mapping, name = match.groups()
            if scalar is not None:
                value = getattr(self.situation, scalar)
                name = scalar
            elif mapping == "labels":
                value = self.labels.get(name)
                name = f"label {name}"
            else:
                known = self.change is not None and name in ChangeRecorded.model_fields
                value = getattr(self.change, name) if known else None
                value = value if isinstance(value, str) else None
                name = f"change.{name}"
            if value is None or value == "":
                raise MissingValue(name)
            return json.dumps(value, ensure_ascii=False)[1:-1] if promql else value

        return _PLACEHOLDER.sub(value_of, template)

    def render_lenient(self, template: str) -> str:
        """For prose: a missing value is shown as missing instead of failing."""
        try:
            return self.render(template)
        except MissingValue:
            return _PLACEHOLDER.sub(self._shown, template)

    def _shown(self, match: re.Match[str]) -> str:
        try:
            return self.render(match.group(0))
        except MissingValue as missing:
            return f"<no {missing.name}>"


class Playbook(_RuleModel):
    rules: list[PlaybookRule]

    @model_validator(mode="after")
    def _unique_names(self) -> Playbook:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {', '.join(duplicates)}")
        return self

    def select(self, situation: Situation) -> Selection | None:
        """The first rule that matches, or None when no rule speaks of this kind of incident."""
        for rule in self.rules:
            if situation.kind not in rule.alertnames:
                continue
            if any(situation.labels.get(name) != value for name, value in rule.labels.items()):
                continue
            change = None
            if rule.requires_change is not None:
                change = next(
                    (c for c in situation.changes if c.kind == rule.requires_change and c.previous_version), None
                )
                if change is None:
                    continue
            return Selection(rule, situation, change, _labels_with_defaults(rule, situation))
        return None

    def candidate_actions(self, kind: str) -> list[str]:
        """Every action some rule for `kind` could propose (what to ask knowledge's statistics about)."""
        actions: list[str] = []
        for rule in self.rules:
            if kind in rule.alertnames:
                actions.extend(a for a in rule.actions() if a not in actions)
        return actions

    def with_rules_first(self, rules: Sequence[PlaybookRule]) -> Playbook:
        """This playbook with `rules` tried first; a rule of the same name replaces the existing one."""
        replaced = {rule.name for rule in rules}
        return Playbook(rules=[*rules, *(rule for rule in self.rules if rule.name not in replaced)])


def _labels_with_defaults(rule: PlaybookRule, situation: Situation) -> dict[str, str]:
    bare = Selection(rule, situation, None, {})
    labels: dict[str, str] = {}
    for name, template in rule.label_defaults.items():
        try:
            labels[name] = bare.render(template)
        except MissingValue:
            continue
    labels.update({name: value for name, value in situation.labels.items() if value != ""})
    return labels


def load_rules(path: Path) -> list[PlaybookRule]:
    """Rules from a JSON file: a list of rules, or an object with a `rules` list. ValueError saying what is wrong."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"playbook file {path} not readable as JSON: {exc}") from exc
    raw = loaded.get("rules") if isinstance(loaded, dict) else loaded
    try:
        return Playbook.model_validate({"rules": raw}).rules
    except ValidationError as exc:
        raise ValueError(f"playbook file {path} is not a valid playbook: {exc}") from exc


# ---------------------------------------------------------------- rendering what a selection proposes


@dataclass(frozen=True)
class RenderedProbe:
    name: str
    query: str
    comparator: Comparator
    threshold: float


@dataclass(frozen=True)
class PlanDraft:
    """The plan a rule proposes for this incident, or None; `problems` say what was left out and why."""

    plan: RemediationPlan | None
    problems: list[str] = field(default_factory=list)


def render_probes(selection: Selection) -> tuple[list[RenderedProbe], list[str]]:
    """The rule's probes ready to run, and why any could not be."""
    probes, problems = [], []
    for probe in selection.rule.probes:
        try:
            query = selection.render(probe.query, promql=True)
            threshold = _number(selection, probe.threshold, "threshold")
        except (MissingValue, ValueError) as exc:
            problems.append(f"metric probe {probe.name} skipped: {_reason(exc)}")
            continue
        probes.append(RenderedProbe(probe.name, query, probe.comparator, threshold))
    return probes, problems


def draft_plan(selection: Selection) -> PlanDraft:
    rule = selection.rule
    if not rule.steps:
        return PlanDraft(None, [f"no plan: rule {rule.name} proposes no action"])
    try:
        steps = [_render_step(selection, template) for template in rule.steps]
    except (MissingValue, ValueError) as exc:
        return PlanDraft(None, [f"no plan: {_reason(exc)}"])
    problems = []
    try:
        rollback = [_render_step(selection, template) for template in rule.rollback]
    except (MissingValue, ValueError) as exc:
        rollback = []
        problems.append(f"plan without rollback: {_reason(exc)}")
    verify = None
    if rule.verify is not None:
        try:
            verify = VerifySpec(
                query=selection.render(rule.verify.query, promql=True),
                comparator=rule.verify.comparator,
                threshold=_number(selection, rule.verify.threshold, "verify threshold"),
                window_s=_number(selection, rule.verify.window_s, "verify window_s"),
            )
        except (MissingValue, ValueError) as exc:
            problems.append(f"plan without verification: {_reason(exc)}")
    try:
        plan = RemediationPlan(steps=steps, rollback=rollback, verify=verify)
    except ValidationError as exc:
        return PlanDraft(None, [f"no plan: {_reason(exc)}"])
    return PlanDraft(plan, problems)


def _render_step(selection: Selection, template: StepTemplate) -> PlanStep:
    params = {name: _render_value(selection, value) for name, value in template.params.items()}
    for name, value in template.optional_params.items():
        try:
            params[name] = _render_value(selection, value)
        except MissingValue:
            continue
    return PlanStep(
        action=template.action,
        target=selection.render(template.target),
        params=params,
        timeout_s=template.timeout_s,
        retries=template.retries,
    )


def _render_value(selection: Selection, value: Any) -> Any:
    return selection.render(value) if isinstance(value, str) else value


def _number(selection: Selection, value: str | float, what: str) -> float:
    if not isinstance(value, str):
        return float(value)
    text = selection.render(value)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, MissingValue):
        if exc.name.startswith("label "):
            return f"the alert has no label {exc.name.removeprefix('label ')!r}"
        return f"the incident has no {exc.name}"
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)[:3])
    return str(exc)
