"""The approver's brief: a few plain lines for the human asked to approve a CONFIRM action.

Why this action (the diagnosis' rationale or hypothesis, how it was reached and how sure it is), what the risk
breakdown says, and how this action and others fared on past incidents of the same kind. It informs the human and
nothing else: no decision of coordination reads it.

Much of it is text nobody vetted (a model's rationale, an alert's title, a past incident's title), so every piece
is made one line, stripped of control characters and cut to a bound before it goes in, and the whole brief is
bounded too (`MAX_BRIEF_CHARS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from agents.coordination.plan_scoring import PlanScore, StepScore
from bus.events import ActionStat, Evidence, PlanStep, RiskAssessment

MAX_BRIEF_CHARS = 1200
MAX_SIMILAR = 3
CLOSING = "This brief informs; the decision is yours."
NO_SIMILAR = "Similar incidents: no similar incidents on record."

_PIECE_CHARS = 300  # the most of one untrusted piece (a hypothesis, a title) before the whole brief is fitted
_WHY_CHARS = 450  # a rationale is a few sentences
_MIN_BODY_CHARS = 40
_RISK_FLOOR_CHARS = 400
_TIER_ORDER = {"SAFE": 0, "CONFIRM": 1, "FORBIDDEN": 2}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal escape sequences (colours, cursor moves)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]+")
_SPACES = re.compile(r"\s+")


def approval_brief(
    step: PlanStep,
    risk: RiskAssessment,
    diagnosis: Mapping[str, Any],
    history: Sequence[ActionStat] = (),
    similar: Sequence[Evidence | Mapping[str, Any]] = (),
    *,
    kind: str | None = None,
    plan: Sequence[PlanStep] = (),
    max_chars: int = MAX_BRIEF_CHARS,
) -> str:
    """The brief for approving `step` (scored `risk`), from the diagnosis coordination keeps for the incident
    (`hypothesis`, `confidence`, `method`, `rationale`, `evidence`), the action statistics of the diagnosis and
    the similar past incidents (evidence of kind "incident"; taken from the diagnosis' evidence when not given).

    `plan` is the whole plan when it has more than this step: the approval covers all of it."""
    incidents = list(similar) or [e for e in diagnosis.get("evidence") or () if _field(e, "kind") == "incident"]
    lines = [
        _ask_line(step, plan),
        _why_line(diagnosis),
        _risk_line(risk),
        *_record_lines(step.action, history, kind),
        _similar_line(incidents),
    ]
    return _fit(lines, CLOSING, max_chars)


def plan_brief(
    score: PlanScore, diagnosis: Mapping[str, Any], history: Sequence[ActionStat], *, kind: str | None
) -> str:
    """The brief for a plan waiting for approval: about its riskiest step, naming the others."""
    riskiest = max(score.steps, key=_riskiness)
    plan = [s.step for s in score.steps] if len(score.steps) > 1 else []
    return approval_brief(riskiest.step, riskiest.risk, diagnosis, history, kind=kind, plan=plan)


def one_line(text: object, limit: int = _PIECE_CHARS) -> str:
    """`text` as one clean line of at most `limit` characters: control characters and line breaks become spaces,
    runs of spaces one, and a cut is marked with an ellipsis."""
    flat = _SPACES.sub(" ", _CONTROL.sub(" ", _ANSI.sub("", str(text)))).strip()
    return flat if len(flat) <= limit else flat[: max(limit - 1, 0)].rstrip() + "…"


# ------------------------------------------------------------------ the lines
# Each line is (head, body, tail, floor): fitting the brief to its bound cuts bodies only, none below its floor.

Line = tuple[str, str, str, int]


def _ask_line(step: PlanStep, plan: Sequence[PlanStep]) -> Line:
    whole = f"The approval covers the whole plan: {', then '.join(map(_step_name, plan))}." if len(plan) > 1 else ""
    head = f"Approve {_step_name(step)}?"
    return (f"{head} ", one_line(whole, 240), "", _MIN_BODY_CHARS) if whole else (head, "", "", 0)


def _why_line(diagnosis: Mapping[str, Any]) -> Line:
    rationale = one_line(diagnosis.get("rationale") or "", _WHY_CHARS)
    hypothesis = one_line(diagnosis.get("hypothesis") or "", _WHY_CHARS)
    reason = rationale or hypothesis or "the diagnosis gave no reason"
    method = one_line(diagnosis.get("method") or "unknown", 20)
    confidence = diagnosis.get("confidence")
    sure = f", confidence {confidence:.2f}" if isinstance(confidence, int | float) else ""
    return "Why: ", _sentence(reason), f" ({method} diagnosis{sure})", _MIN_BODY_CHARS


def _risk_line(risk: RiskAssessment) -> Line:
    tier_prefix = f"{risk.tier}:"
    factors = [one_line(r, 120) for r in risk.reasons if not r.startswith(tier_prefix)]
    if not factors:  # no sentences: say the non-zero factors by name
        factors = [f"{key} {value:+.2f}" for key, value in risk.breakdown.items() if value]
    told = "; ".join(factors) or "no factor above zero"
    verdict = next((one_line(r[len(tier_prefix) :], 160) for r in risk.reasons if r.startswith(tier_prefix)), "")
    because = f" {risk.tier} because {_sentence(verdict)}" if verdict else ""
    body = f"{told}.{because}"  # our own words, not untrusted ones: cut last
    return f"Risk: {risk.tier}, score {risk.score:.2f} — ", body, "", min(len(body), _RISK_FLOOR_CHARS)


def _record_lines(action: str, history: Sequence[ActionStat], kind: str | None) -> list[Line]:
    tried = [s for s in history if s.attempts > 0]
    if kind is None and tried:  # one kind only: the action's own, else the first one on record
        kind = next((s.kind for s in tried if s.action == action), tried[0].kind)
    if kind is None:
        return []
    kind_name = one_line(kind, 60)
    stats = [s for s in tried if s.kind == kind]
    own = next((s for s in stats if s.action == action), None)
    if not stats:
        body = f"no past {kind_name} incidents on record for {action}."
    elif own is None:
        body = f"{action} has no record on past {kind_name} incidents."
    else:
        body = f"{action} remediated {min(own.successes, own.attempts)} of {own.attempts} past {kind_name} incidents."
    own_rate = _rate(own) if own is not None else 0.0
    better = sorted((s for s in stats if s.action != action and _rate(s) > own_rate), key=_rate, reverse=True)
    if better:
        told = ", ".join(f"{one_line(s.action, 40)} {min(s.successes, s.attempts)} of {s.attempts}" for s in better[:3])
        body += f" Did better: {told}."
    return [("Track record: ", body, "", _MIN_BODY_CHARS)]


def _similar_line(incidents: Sequence[Evidence | Mapping[str, Any]]) -> Line:
    if not incidents:
        return "Similar incidents: ", NO_SIMILAR.removeprefix("Similar incidents: "), "", _MIN_BODY_CHARS
    ranked = sorted(incidents, key=lambda e: _score(e) if _score(e) is not None else -1.0, reverse=True)
    return "Similar incidents: ", "; ".join(_incident(e) for e in ranked[:MAX_SIMILAR]) + ".", "", _MIN_BODY_CHARS


def _incident(evidence: Evidence | Mapping[str, Any]) -> str:
    data = _field(evidence, "data") or {}
    title = one_line(data.get("title") or _field(evidence, "summary") or "untitled", 80)
    details = []
    if data.get("outcome"):
        details.append(one_line(data["outcome"], 30))
    actions = data.get("actions")
    if isinstance(actions, list) and actions:
        details.append(one_line(", ".join(str(a) for a in actions[:4]), 80))
    score = _score(evidence)
    if score is not None:
        details.append(f"similarity {score:.2f}")
    return f'"{title}"' + (f" ({'; '.join(details)})" if details else "")


# ------------------------------------------------------------------ helpers


def _fit(lines: list[Line], closing: str, max_chars: int) -> str:
    """The lines and the closing line in at most `max_chars`: the longest bodies are cut, level by level, none
    below its floor (and, should that not be enough, the whole is cut at the bound)."""
    heads, bodies, tails, floors = (list(part) for part in zip(*lines, strict=True))

    def text() -> str:
        return "\n".join([*(h + b + t for h, b, t in zip(heads, bodies, tails, strict=True)), closing])

    while (excess := len(text()) - max_chars) > 0:
        cuttable = [i for i in range(len(bodies)) if len(bodies[i]) > floors[i]]
        if not cuttable and any(f > _MIN_BODY_CHARS for f in floors):
            floors = [min(f, _MIN_BODY_CHARS) for f in floors]  # a tight bound: every body to the common floor
            continue
        if not cuttable:
            break
        longest = max(cuttable, key=lambda i: len(bodies[i]))
        size = len(bodies[longest])
        others = max((len(bodies[i]) for i in cuttable if i != longest), default=0)
        bodies[longest] = one_line(bodies[longest], max(floors[longest], size - excess, min(others, size - 1)))
    return text()[:max_chars]


def _step_name(step: PlanStep) -> str:
    return f"{one_line(step.action, 60)} on {one_line(step.target, 80)}"


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def _field(item: Evidence | Mapping[str, Any], name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _score(item: Evidence | Mapping[str, Any]) -> float | None:
    score = _field(item, "score")
    return float(score) if isinstance(score, int | float) else None


def _rate(stat: ActionStat) -> float:
    return min(stat.successes, stat.attempts) / stat.attempts if stat.attempts else 0.0


def _riskiness(scored: StepScore) -> tuple[int, float]:
    return _TIER_ORDER[scored.risk.tier], scored.risk.score
