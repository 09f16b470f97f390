"""The question diagnosis asks knowledge: alert names, annotations, telling labels, changes, hypothesis."""

from __future__ import annotations

import pytest

from agents.diagnosis.knowledge_query import MAX_QUERY_CHARS, knowledge_query
from agents.diagnosis.playbook import situation_of
from bus.events import AlertRef, ChangeRecorded, DiagnosisRequested


def _request(labels: dict[str, str], annotations: dict[str, object] | None = None) -> DiagnosisRequested:
    alert = AlertRef(fingerprint="f1", alertname="HighErrorRate", status="firing", labels=labels)
    context = {"annotations": annotations} if annotations is not None else {}
    return DiagnosisRequested(
        produced_by="tests", service="checkout", kind="HighErrorRate", alerts=[alert], context=context
    )


def test_the_query_carries_alert_annotations_labels_changes_and_hypothesis() -> None:
    request = _request(
        {"alertname": "HighErrorRate", "service": "checkout", "env": "prod", "verify_window_s": "5",
         "error_ratio_threshold": "0.05", "path": "/var/lib/x"},
        {"summary": "5xx rate above 5% for checkout", "description": "errors since the deploy", "count": 3},
    )  # fmt: skip
    change = ChangeRecorded(produced_by="tests", service="checkout", kind="deploy", description="release", version="v2")
    situation = situation_of(request, [change])
    query = knowledge_query(request, situation, "v2 broke checkout: roll back")
    lines = query.splitlines()
    assert lines[0] == "HighErrorRate"
    assert "5xx rate above 5% for checkout" in lines and "errors since the deploy" in lines
    assert "checkout prod" in lines
    assert "deploy release v2" in lines and lines[-1] == "v2 broke checkout: roll back"
    for noise in ("0.05", "/var/lib/x", "verify_window_s"):
        assert noise not in query


@pytest.mark.parametrize("annotations", [None, {}, {"summary": 5}, "not a mapping"])
def test_missing_or_odd_annotations_are_left_out(annotations: object) -> None:
    request = _request({"service": "checkout"}, annotations)  # type: ignore[arg-type]
    query = knowledge_query(request, situation_of(request, []), "")
    assert query.splitlines() == ["HighErrorRate", "service checkout", "checkout"]


def test_the_query_is_capped() -> None:
    request = _request({"service": "checkout"}, {"description": "x " * 2000})
    assert len(knowledge_query(request, situation_of(request, []), "h")) == MAX_QUERY_CHARS
