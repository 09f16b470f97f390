"""The question diagnosis asks the knowledge base about an incident: what an SRE would type into its search.

It is built from the incident's alerts (names and label values), the annotations Alertmanager sent (summary,
description), the service's recent changes and the playbook's hypothesis, so that a runbook is found by the alert
it names, by the symptom its description tells, or by the change that preceded it. Label values that say nothing
about the problem (verification windows, thresholds, file paths) are left out; the text is capped in length.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.diagnosis.playbook import Situation
from bus.events import DiagnosisRequested

MAX_QUERY_CHARS = 1000
# Label names whose values are plumbing, not symptoms.
_NOISE_LABELS = frozenset(
    {"verify_window_s", "error_ratio_threshold", "latency_threshold_s", "threshold_bytes", "min_age_s", "path",
     "runbook_url", "generatorURL", "log_file", "process", "instance", "job", "fingerprint", "alerts"}
)  # fmt: skip
_TEXT_ANNOTATIONS = ("summary", "description", "message")


def knowledge_query(request: DiagnosisRequested, situation: Situation, hypothesis: str) -> str:
    """One text: alert names, annotations, telling label values, recent changes, the hypothesis."""
    alertnames = list(dict.fromkeys([situation.kind, *(a.alertname for a in request.alerts)]))
    parts: list[str] = [" ".join(n for n in alertnames if n and n != "unknown"), f"service {situation.service}"]
    given = request.context.get("annotations")
    for said in [given if isinstance(given, dict) else {}, *(alert.annotations for alert in request.alerts)]:
        for text in (said.get(k) for k in _TEXT_ANNOTATIONS):
            if isinstance(text, str) and text not in parts:
                parts.append(text)
    values = _label_values(alert.labels for alert in request.alerts)
    if values:
        parts.append(" ".join(values))
    parts += [f"{c.kind} {c.description or ''} {c.version or ''}".strip() for c in situation.changes[:2]]
    if hypothesis:
        parts.append(hypothesis)
    text = "\n".join(p for p in parts if p.strip())
    return text[:MAX_QUERY_CHARS]


def _label_values(labels: Sequence[dict[str, str]] | object) -> list[str]:
    seen: dict[str, None] = {}
    for mapping in labels:  # type: ignore[attr-defined]
        for name, value in mapping.items():
            if name not in _NOISE_LABELS and name != "alertname" and value and len(value) <= 80:
                seen.setdefault(value, None)
    return list(seen)
