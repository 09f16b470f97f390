"""The diagnosis playbook: which rule an alert meets, the plan it proposes, and how sure diagnosis is of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.diagnosis.conclusion import Gathered, ProbeReading, conclude
from agents.diagnosis.default_rules import DEFAULT_PLAYBOOK, DEFAULT_RULES
from agents.diagnosis.knowledge_replies import KnowledgeReply
from agents.diagnosis.playbook import (
    Playbook,
    PlaybookRule,
    Situation,
    StepTemplate,
    draft_plan,
    load_rules,
    render_probes,
    situation_of,
)
from bus.events import ActionStat, AlertRef, ChangeRecorded, DiagnosisRequested, KnowledgeAnswered, KnowledgeHit
from bus.plan_contract import plan_contract_errors
from execution.catalog import default_catalog
from execution.prometheus_queries import QueryResult, Sample

LATENCY = (
    'histogram_quantile(0.99, sum by (le) (irate(demo_request_duration_seconds_bucket{service="checkout"}[1m])))'
)
POOL = 'max(demo_pool_in_use{service="checkout"} / demo_pool_size{service="checkout"})'
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
UP = 'min(up{service="checkout"})'
DISK = 'max(demo_disk_used_bytes{service="checkout"})'
LIVE = ' and on(service, version) demo_build_info{service="checkout"}'
ERRORS = (
    f'sum(irate(demo_request_errors_total{{service="checkout"}}[1m]){LIVE})'
    f' / sum(irate(demo_requests_total{{service="checkout"}}[1m]){LIVE})'
)


def deploy(version: str | None = "1.3.0", previous: str | None = "1.2.0", minutes_ago: float = 5) -> ChangeRecorded:
    return ChangeRecorded(
        produced_by="tests", service="checkout", kind="deploy", version=version, previous_version=previous,
        occurred_at=NOW - timedelta(minutes=minutes_ago),
    )  # fmt: skip


def request(kind: str, labels: dict[str, str] | None = None, **fields: Any) -> DiagnosisRequested:
    alert = AlertRef(fingerprint="fp-1", alertname=kind, status="firing", labels=labels or {})
    return DiagnosisRequested(produced_by="tests", service="checkout", kind=kind, alerts=[alert], **fields)


def diagnose(kind: str, labels: dict[str, str] | None = None, changes: list[ChangeRecorded] | None = None,
             playbook: Playbook = DEFAULT_PLAYBOOK, **gathered: Any):  # fmt: skip  # noqa: ANN201
    """Conclude as the agent does; the recent changes are both what the playbook sees and the change evidence."""
    situation = situation_of(request(kind, labels), changes or [])
    gathered.setdefault("changes", changes or [])
    selection = playbook.select(situation)
    draft = draft_plan(selection) if selection is not None else None
    return conclude(situation, selection, draft, Gathered(**gathered), default_catalog(), now=NOW)


def steps_of(plan) -> list[tuple[str, str, dict[str, Any]]]:  # noqa: ANN001
    return [(s.action, s.target, s.params) for s in plan.steps]


@pytest.mark.parametrize(
    ("kind", "labels", "changes", "steps", "verify"),
    [
        ("ServiceDown", {}, [], [("restart_process", "checkout", {})], (UP, ">=", 1.0, 10.0)),
        ("TargetDown", {"process": "web"}, [], [("restart_process", "web", {})], (UP, ">=", 1.0, 10.0)),
        ("ServiceDown", {"verify_window_s": "3"}, [], [("restart_process", "checkout", {})], (UP, ">=", 1.0, 3.0)),
        (
            "DiskFull", {"path": "/srv/checkout/tmp", "threshold_bytes": "5000"}, [],
            [("clear_disk", "checkout", {"path": "/srv/checkout/tmp", "min_age_s": 3600.0})], (DISK, "<", 5000.0, 30.0),
        ),
        (
            "DiskUsageHigh", {"path": "/srv/checkout/tmp", "min_age_s": "120", "threshold_bytes": "1e6"}, [],
            [("clear_disk", "checkout", {"path": "/srv/checkout/tmp", "min_age_s": 120.0})], (DISK, "<", 1e6, 30.0),
        ),
        (
            "HighErrorRate", {}, [deploy()],
            [("rollback_deploy", "checkout", {"to_version": "1.2.0"})], (ERRORS, "<", 0.05, 60.0),
        ),
        (
            "HighErrorRate", {"error_ratio_threshold": "0.01"}, [deploy(version="2", previous="1")],
            [("rollback_deploy", "checkout", {"to_version": "1"})], (ERRORS, "<", 0.01, 60.0),
        ),
        ("HighErrorRate", {}, [], [("restart_process", "checkout", {})], (ERRORS, "<", 0.05, 60.0)),
        # A deploy that does not say what it replaced cannot be rolled back: the plain rule applies.
        (
            "HighErrorRate", {}, [deploy(previous=None)],
            [("restart_process", "checkout", {})], (ERRORS, "<", 0.05, 60.0),
        ),
        ("HighLatency", {}, [], [("restart_process", "checkout", {})], (LATENCY, "<", 1.0, 60.0)),
        ("HealthCheckFailing", {"process": "web"}, [], [("restart_process", "web", {})], (UP, ">=", 1.0, 30.0)),
        ("ConnectionPoolExhausted", {}, [], [("flush_connection_pool", "checkout", {})], (POOL, "<", 1.0, 30.0)),
        (
            "ConnectionPoolExhausted", {"pool": "replica"}, [],
            [("flush_connection_pool", "checkout", {"pool": "replica"})], (POOL, "<", 1.0, 30.0),
        ),
        ("DatabaseCorruption", {}, [], [("failover_database", "checkout", {})], None),
        ("DatabaseCorruption", {"db": "orders-db"}, [], [("failover_database", "orders-db", {})], None),
    ],
)
def test_an_alert_gets_its_rules_plan(
    kind: str,
    labels: dict[str, str],
    changes: list[ChangeRecorded],
    steps: list[tuple[str, str, dict[str, Any]]],
    verify: tuple[str, str, float, float] | None,
) -> None:
    diagnosis = diagnose(kind, labels, changes)

    assert diagnosis.plan is not None, diagnosis.hypothesis
    assert steps_of(diagnosis.plan) == steps
    if verify is not None:
        spec = diagnosis.plan.verify
        assert spec is not None
        assert (spec.query, spec.comparator, spec.threshold, spec.window_s) == verify
    assert plan_contract_errors(diagnosis.plan.model_dump(mode="json")) == []


def test_a_deploy_rollback_never_brings_the_bad_deploy_back_by_itself() -> None:
    plan = diagnose("HighErrorRate", {}, [deploy()]).plan

    assert plan is not None
    assert [s.action for s in plan.steps] == ["rollback_deploy"]
    assert plan.rollback == []


@pytest.mark.parametrize(
    ("kind", "changes", "hypothesis", "confidence"),
    [
        ("HighErrorRate", [deploy()], "deploy 1.2.0→1.3.0 of checkout raised the error rate", 0.75),
        (
            "HighErrorRate", [],
            "checkout answers with errors and was not deployed recently: a restart may clear a bad state", 0.35,
        ),
        ("ServiceDown", [], "checkout is down: process checkout is not running or not answering its scrapes", 0.6),
        ("NoSuchAlert", [deploy()], "no playbook rule for NoSuchAlert", 0.1),
    ],
)
def test_the_hypothesis_and_confidence_follow_the_rule_and_the_changes(
    kind: str, changes: list[ChangeRecorded], hypothesis: str, confidence: float
) -> None:
    diagnosis = diagnose(kind, {}, changes)

    assert (diagnosis.hypothesis, diagnosis.confidence) == (hypothesis, confidence)
    assert diagnosis.evidence[-1].summary.startswith(f"confidence {confidence:g}")


def test_an_unknown_alert_has_no_plan_but_keeps_its_evidence() -> None:
    diagnosis = diagnose("NoSuchAlert", {}, [deploy()])

    assert diagnosis.plan is None
    assert [e.kind for e in diagnosis.evidence] == ["change", "note"]
    assert diagnosis.evidence[0].data["previous_version"] == "1.2.0"


@pytest.mark.parametrize(
    ("kind", "labels", "reason"),
    [
        ("DiskFull", {"threshold_bytes": "5000"}, "no plan: the alert has no label 'path'"),
        ("DiskFull", {"path": "relative/dir"}, "no plan: invalid params for clear_disk: path: Value error, must be an"),
        ("DiskFull", {"path": "/srv/x", "min_age_s": "ten"}, "no plan: invalid params for clear_disk: min_age_s"),
        ("DiskFull", {"path": "/srv/x", "min_age_s": "5"}, "no plan: invalid params for clear_disk: min_age_s: Input"),
    ],
)
def test_a_plan_that_cannot_be_built_is_none_and_the_hypothesis_says_why(
    kind: str, labels: dict[str, str], reason: str
) -> None:
    diagnosis = diagnose(kind, labels)

    assert diagnosis.plan is None
    assert f"; {reason}" in diagnosis.hypothesis
    assert any(e.kind == "note" and e.summary.startswith(reason) for e in diagnosis.evidence)


def test_a_disk_alert_without_a_threshold_gets_a_plan_without_verification() -> None:
    diagnosis = diagnose("DiskFull", {"path": "/srv/checkout/tmp"})

    assert diagnosis.plan is not None and diagnosis.plan.verify is None
    summaries = [e.summary for e in diagnosis.evidence]
    assert "plan without verification: the alert has no label 'threshold_bytes'" in summaries


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        (StepTemplate(action="reboot_host"), "no plan: unknown action 'reboot_host': not in the catalog"),
        (
            StepTemplate(action="rollback_deploy", params={"to_version": "1.2 beta"}),
            "no plan: invalid params for rollback_deploy",
        ),
        (StepTemplate(action="scale", params={"replicas": 0}), "no plan: invalid params for scale: replicas"),
    ],
)
def test_a_plan_the_catalog_refuses_is_dropped(step: StepTemplate, problem: str) -> None:
    rule = PlaybookRule(name="custom", alertnames=["Custom"], hypothesis="h", confidence=0.9, steps=[step])

    diagnosis = diagnose("Custom", playbook=Playbook(rules=[rule]))

    assert diagnosis.plan is None
    assert any(e.summary.startswith(problem) for e in diagnosis.evidence)


def test_every_standard_rule_drafts_a_plan_the_catalog_and_the_contract_accept() -> None:
    labels = {"path": "/srv/x", "threshold_bytes": "10", "process": "p", "pool": "main", "db": "orders"}
    for rule in DEFAULT_RULES:
        diagnosis = diagnose(rule.alertnames[0], labels, [deploy()], playbook=Playbook(rules=[rule]))
        assert diagnosis.plan is not None, (rule.name, diagnosis.hypothesis)
        assert plan_contract_errors(diagnosis.plan.model_dump(mode="json")) == []


def probe_result(query: str, *values: float) -> QueryResult:
    samples = [Sample(value=v) for v in values]
    return QueryResult(status="ok" if samples else "empty", query=query, samples=samples)


@pytest.mark.parametrize(
    ("values", "confidence", "evidence_kind"),
    [((0.0,), 0.7, "metric"), ((1.0,), 0.5, "metric"), ((), 0.6, "note")],
)
def test_a_metric_moves_confidence_when_it_confirms_or_contradicts_the_alert(
    values: tuple[float, ...], confidence: float, evidence_kind: str
) -> None:
    selection = DEFAULT_PLAYBOOK.select(Situation(service="checkout", kind="ServiceDown"))
    assert selection is not None
    (probe,), _ = render_probes(selection)

    diagnosis = diagnose("ServiceDown", readings=[ProbeReading(probe, probe_result(probe.query, *values))])

    assert diagnosis.confidence == confidence
    assert diagnosis.evidence[0].kind == evidence_kind
    assert diagnosis.evidence[0].source == UP


def test_prometheus_errors_become_notes() -> None:
    selection = DEFAULT_PLAYBOOK.select(Situation(service="checkout", kind="ServiceDown"))
    assert selection is not None
    (probe,), _ = render_probes(selection)
    failed = QueryResult(status="error", query=probe.query, error="prometheus unreachable: ConnectError()")

    diagnosis = diagnose("ServiceDown", readings=[ProbeReading(probe, failed)])

    assert diagnosis.evidence[0].summary == "metric up: not read: prometheus unreachable: ConnectError()"
    assert diagnosis.confidence == 0.6


def answer(*stats: ActionStat, hits: tuple[KnowledgeHit, ...] = ()) -> KnowledgeReply:
    answered = KnowledgeAnswered(produced_by="tests", query_event_id="q", hits=list(hits), action_stats=list(stats))
    return KnowledgeReply(status="answered", answer=answered)


def stat(action: str, attempts: int, successes: int, kind: str = "HighErrorRate") -> ActionStat:
    return ActionStat(kind=kind, action=action, attempts=attempts, successes=successes)


@pytest.mark.parametrize(
    ("stats", "confidence", "better"),
    [
        ((stat("rollback_deploy", 4, 4),), 0.85, None),
        ((stat("rollback_deploy", 5, 1),), 0.65, None),
        ((stat("rollback_deploy", 1, 0),), 0.75, None),  # one attempt says too little
        (
            (stat("rollback_deploy", 4, 2), stat("restart_process", 3, 3)), 0.75,
            "restart_process remediated past HighErrorRate incidents more often (3/3)"
            " than the plan's rollback_deploy (2/4)",
        ),
        ((stat("rollback_deploy", 4, 4, kind="ServiceDown"),), 0.75, None),  # another kind's record does not count
    ],
)
def test_knowledge_statistics_move_confidence_and_are_kept_as_history(
    stats: tuple[ActionStat, ...], confidence: float, better: str | None
) -> None:
    diagnosis = diagnose("HighErrorRate", {}, [deploy()], knowledge=answer(*stats))

    assert diagnosis.confidence == confidence
    assert diagnosis.history == list(stats)
    notes = [e.summary for e in diagnosis.evidence if e.source == "knowledge"]
    assert notes == ([] if better is None else [better])


def test_knowledge_hits_become_incident_and_runbook_evidence() -> None:
    hits = (
        KnowledgeHit(doc_id="inc-7", score=0.91, title="checkout errors after deploy", type="incident",
                     payload={"outcome": "remediated", "actions": [{"action": "rollback_deploy"}]}),
        KnowledgeHit(doc_id="rb-1", score=0.5, title="Rolling back a deploy", type="runbook",
                     source="runbooks/rollback.md"),
    )  # fmt: skip

    diagnosis = diagnose("HighErrorRate", {}, [deploy()], knowledge=answer(hits=hits))

    found = [(e.kind, e.score, e.source, e.data.get("outcome"), e.data.get("actions"))
             for e in diagnosis.evidence if e.kind in ("incident", "runbook")]  # fmt: skip
    assert found == [
        ("incident", 0.91, "inc-7", "remediated", ["rollback_deploy"]),
        ("runbook", 0.5, "runbooks/rollback.md", None, None),
    ]


def test_a_knowledge_timeout_is_a_note() -> None:
    reply = KnowledgeReply(status="timeout", error="knowledge did not answer within 5s")

    diagnosis = diagnose("ServiceDown", knowledge=reply)

    assert "knowledge did not answer within 5s" in [e.summary for e in diagnosis.evidence if e.kind == "note"]


@pytest.mark.parametrize(
    ("service", "query"),
    [("checkout", 'min(up{service="checkout"})'), ('we"ird\\svc', 'min(up{service="we\\"ird\\\\svc"})')],
)
def test_values_in_queries_are_escaped_for_promql(service: str, query: str) -> None:
    selection = DEFAULT_PLAYBOOK.select(Situation(service=service, kind="ServiceDown"))
    assert selection is not None

    (probe,), problems = render_probes(selection)

    assert (probe.query, problems) == (query, [])


def test_the_primary_alert_and_the_context_annotations_give_the_labels() -> None:
    alerts = [
        AlertRef(fingerprint="a", alertname="HighLatency", status="firing", labels={"process": "other"}),
        AlertRef(fingerprint="b", alertname="ServiceDown", status="resolved", labels={"process": "old"}),
        AlertRef(fingerprint="c", alertname="ServiceDown", status="firing", labels={"process": "web"}),
    ]
    req = DiagnosisRequested(
        produced_by="tests", service="checkout", kind="ServiceDown", alerts=alerts,
        context={"annotations": {"verify_window_s": "4", "process": "ignored", "bad": 3}},
    )  # fmt: skip

    situation = situation_of(req, [])

    assert dict(situation.labels) == {"verify_window_s": "4", "process": "web"}


def test_candidate_actions_are_every_action_a_rule_of_the_kind_may_propose() -> None:
    assert DEFAULT_PLAYBOOK.candidate_actions("HighErrorRate") == ["rollback_deploy", "restart_process"]
    assert DEFAULT_PLAYBOOK.candidate_actions("NoSuchAlert") == []


def test_a_playbook_file_adds_rules_and_replaces_them_by_name(tmp_path: Path) -> None:
    path = tmp_path / "playbook.json"
    path.write_text(json.dumps({"rules": [
        {"name": "service-down", "alertnames": ["ServiceDown"], "hypothesis": "replaced", "confidence": 0.9,
         "steps": [{"action": "restart_process", "target": "{labels[process]}"}], "label_defaults": {"process": "x"}},
        {"name": "queue-stuck", "alertnames": ["QueueStuck"], "hypothesis": "{service} queue is stuck",
         "confidence": 0.7,
         "steps": [{"action": "run_allowlisted_script", "params": {"script": "drain-queue"}}]},
    ]}))  # fmt: skip

    playbook = DEFAULT_PLAYBOOK.with_rules_first(load_rules(path))

    assert [r.name for r in playbook.rules][:3] == ["service-down", "queue-stuck", "disk-full"]
    assert len(playbook.rules) == len(DEFAULT_RULES) + 1
    queue = diagnose("QueueStuck", playbook=playbook)
    assert (queue.hypothesis, queue.confidence) == ("checkout queue is stuck", 0.7)
    assert queue.plan is not None
    assert steps_of(queue.plan) == [("run_allowlisted_script", "checkout", {"script": "drain-queue"})]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not readable as JSON"),
        ('[{"name": "x", "alertnames": [], "hypothesis": "h", "confidence": 0.5}]', "not a valid playbook"),
        ('[{"name": "x", "alertnames": ["A"], "hypothesis": "h", "confidence": 2}]', "not a valid playbook"),
        ('{"rules": [{"name": "x", "alertnames": ["A"], "hypothesis": "h", "confidence": 0.5, "stpes": []}]}', "valid"),
        ('[{"name": "x", "alertnames": ["A"], "hypothesis": "h", "confidence": 0.5},'
         ' {"name": "x", "alertnames": ["B"], "hypothesis": "h", "confidence": 0.5}]', "rule names must be unique: x"),
    ],
)
def test_an_invalid_playbook_file_is_refused_with_the_reason(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "playbook.json"
    path.write_text(content)

    with pytest.raises(ValueError, match=problem):
        load_rules(path)
