"""The bridge's reading of webhook bodies, and its answer to every bad request. No request here reaches Kafka: the
app's Kafka address is a closed port, so a request that got as far as publishing would answer 503, not its 4xx."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bus.bridge.alert_events import (
    EVENT_ID_NAMESPACE,
    Receipt,
    alert_ids,
    alertmanager_events,
    generic_events,
    severity_of,
)
from bus.bridge.alert_payloads import parse_timestamp
from bus.bridge.app import create_app
from bus.bridge.rejections import Rejection
from bus.bridge.settings import BridgeConfig, BridgeSettings
from bus.config import KafkaConfig
from bus.events import TraceContext

TOKEN = "s3cret-token"
FIRING = {
    "receiver": "incident-webhook", "status": "firing",
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "HighErrorRate", "namespace": "prod", "service": "checkout", "severity": "critical"},
        "annotations": {"runbook_url": "http://runbooks.local/high-error-rate",
                        "summary": "5xx rate above 5% for checkout"},
        "startsAt": "2026-11-21T04:17:08.638817295Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph?g0.expr=rate", "fingerprint": "32c16fb6eca3387b",
    }],
    "groupLabels": {"alertname": "HighErrorRate", "service": "checkout"},
    "commonLabels": {"alertname": "HighErrorRate", "namespace": "prod", "service": "checkout", "severity": "critical"},
    "commonAnnotations": {"summary": "5xx rate above 5% for checkout"}, "externalURL": "http://vm:19093",
    "version": "4", "groupKey": '{}:{alertname="HighErrorRate", service="checkout"}', "truncatedAlerts": 0,
}  # fmt: skip
STARTED = datetime(2026, 11, 21, 4, 17, 8, 638817, tzinfo=UTC)


def resolved(body: dict) -> dict:
    """The same notification once the alert resolved, as Alertmanager sends it."""
    out = copy.deepcopy(body)
    out["status"] = "resolved"
    for alert in out["alerts"]:
        alert["status"], alert["endsAt"] = "resolved", "2026-11-21T04:27:38.123456789Z"
    return out


def changed(**alert_fields: object) -> dict:
    """FIRING with its alert's fields replaced (None removes a field)."""
    out = copy.deepcopy(FIRING)
    for key, value in alert_fields.items():
        if value is None:
            out["alerts"][0].pop(key, None)
        else:
            out["alerts"][0][key] = value
    return out


def receipt(seconds: float = 0) -> Receipt:
    at = datetime(2026, 11, 21, 5, 0, tzinfo=UTC) + timedelta(seconds=seconds)
    return Receipt(at=at, trace=TraceContext.new_root())


def problems_of(parse: Callable[[object, Receipt], object], body: object) -> list[str]:
    with pytest.raises(Rejection) as raised:
        parse(body, receipt())
    assert (raised.value.status, raised.value.reason) == (422, "invalid")
    assert raised.value.detail.startswith("invalid ") and raised.value.problems[0] in raised.value.detail
    return raised.value.problems


# ---------------------------------------------------------------- Alertmanager


def test_an_alertmanager_alert_becomes_one_alert_received_with_every_field() -> None:
    at = receipt()
    (event,) = alertmanager_events(FIRING, at)
    assert (event.type, event.source, event.status) == ("alert.received", "alertmanager", "firing")
    assert event.produced_by == "bridge"
    assert (event.alertname, event.service, event.severity) == ("HighErrorRate", "checkout", "critical")
    assert event.labels == FIRING["alerts"][0]["labels"] and event.annotations == FIRING["alerts"][0]["annotations"]
    assert (event.starts_at, event.ends_at) == (STARTED, None)  # nanoseconds cut to microseconds; Go's zero: None
    assert (event.source_fingerprint, event.generator_url) == ("32c16fb6eca3387b", FIRING["alerts"][0]["generatorURL"])
    assert (event.incident_id, event.causation_id, event.occurred_at) == (None, None, at.at)
    assert event.trace.trace_id == at.trace.trace_id and event.trace != at.trace  # a child span of the request's


def test_a_resent_webhook_yields_the_same_event_ids_and_its_resolve_new_ones() -> None:
    first = alertmanager_events(FIRING, receipt())
    again = alertmanager_events(copy.deepcopy(FIRING), receipt(seconds=30))  # Alertmanager's retry, later
    (resolve,) = alertmanager_events(resolved(FIRING), receipt(seconds=600))
    assert [e.event_id for e in again] == [e.event_id for e in first]
    assert resolve.event_id != first[0].event_id
    assert resolve.correlation_id == first[0].correlation_id  # a firing alert and its resolve belong together
    assert (resolve.status, resolve.ends_at) == ("resolved", datetime(2026, 11, 21, 4, 27, 38, 123456, tzinfo=UTC))


@pytest.mark.parametrize(
    "change",
    [
        {"status": "resolved"},
        {"startsAt": "2026-11-21T05:00:00Z"},
        {"endsAt": "2026-11-21T05:00:00Z"},
        {"fingerprint": "0000000000000001"},
    ],
    ids=["status", "startsAt", "endsAt", "fingerprint"],
)
def test_the_event_id_follows_the_alerts_identity_status_and_times(change: dict) -> None:
    (base,) = alertmanager_events(FIRING, receipt())
    (other,) = alertmanager_events(changed(**change), receipt())
    assert other.event_id != base.event_id


def test_without_a_fingerprint_the_label_set_identifies_the_alert() -> None:
    (first,) = alertmanager_events(changed(fingerprint=None), receipt())
    (again,) = alertmanager_events(changed(fingerprint=None, annotations={"summary": "reworded"}), receipt(seconds=9))
    relabelled = changed(fingerprint=None, labels={**FIRING["alerts"][0]["labels"], "namespace": "staging"})
    (other,) = alertmanager_events(relabelled, receipt())
    assert first.event_id == again.event_id != other.event_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T04:17:08.638817295Z", STARTED),
        ("2026-11-21T04:17:08.638817Z", STARTED),
        ("2026-11-21T04:17:08.6388172951234567Z", STARTED),
        ("2026-11-21T04:17:08Z", STARTED.replace(microsecond=0)),
        ("2026-11-21t04:17:08.5z", STARTED.replace(microsecond=500000)),
        ("2026-11-21T06:17:08.638817295+02:00", STARTED),
        ("2026-11-20T23:17:08.638817295-05:00", STARTED),
        ("0001-01-01T00:00:00Z", None),
        (None, None),
    ],
)
def test_timestamps_are_read_to_the_microsecond_in_utc(text: str | None, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2026-11-21T04:17:08", "2026-11-21", "yesterday", 1763698628, "2026-13-01T00:00:00Z", "2026-11-21T25:00:00Z"],
)
def test_a_timestamp_without_timezone_or_not_rfc3339_is_refused(text: object) -> None:
    problems = problems_of(alertmanager_events, changed(startsAt=text))
    assert problems == [problems[0]] and problems[0].startswith("alerts[0].startsAt: ")


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("critical", "critical"), ("CRITICAL", "critical"), ("page", "critical"), ("fatal", "critical"),
        ("high", "high"), ("error", "high"), ("major", "high"),
        ("warning", "warning"), ("warn", "warning"), ("minor", "warning"),
        ("info", "info"), (" Informational ", "info"), ("none", "info"), ("low", "info"),
        ("sev-banana", "warning"), ("", "warning"), (None, "warning"),
    ],
)  # fmt: skip
def test_severities_are_mapped_and_unknown_ones_are_warning(label: str | None, expected: str) -> None:
    assert severity_of(label) == expected
    labels = {"alertname": "A", "service": "s"} | ({} if label is None else {"severity": label})
    (event,) = alertmanager_events(changed(labels=labels), receipt())
    assert event.severity == expected


@pytest.mark.parametrize(
    ("labels", "service"),
    [({"service": "web", "app": "shop"}, "web"), ({"app": "shop"}, "shop"), ({"service": "", "app": "x"}, "x")],
)
def test_the_service_is_the_service_label_else_the_app_label(labels: dict, service: str) -> None:
    (event,) = alertmanager_events(changed(labels={"alertname": "A", **labels}), receipt())
    assert event.service == service


def _without_alertname(body: dict) -> None:
    del body["alerts"][0]["labels"]["alertname"]


def _second_alert_without_service(body: dict) -> None:
    body["alerts"].append(copy.deepcopy(body["alerts"][0]))
    body["alerts"][1]["labels"] = {"alertname": "HighErrorRate", "job": "opswarm-targets"}


BAD_WEBHOOKS: list[tuple[str, Callable[[dict], object], list[str]]] = [
    ("no alerts field", lambda b: b.pop("alerts"), ["alerts: required field is missing"]),
    ("empty alerts", lambda b: b.update(alerts=[]),
     ["alerts: List should have at least 1 item after validation, not 0"]),
    ("alerts not a list", lambda b: b.update(alerts={"a": 1}), ["alerts: Input should be a valid list"]),
    ("version 3", lambda b: b.update(version="3"), ["version: Input should be '4'"]),
    ("no version", lambda b: b.pop("version"), ["version: required field is missing"]),
    ("no alertname", _without_alertname, ["alerts[0].labels: label 'alertname' is missing"]),
    ("service only in job", lambda b: b["alerts"][0]["labels"].pop("service"),
     ["alerts[0].labels: label 'service' is missing (and no 'app' label to use instead; 'job' is not taken)"]),
    ("second alert without service", _second_alert_without_service,
     ["alerts[1].labels: label 'service' is missing (and no 'app' label to use instead; 'job' is not taken)"]),
    ("no labels at all", lambda b: b["alerts"][0].update(labels={}),
     ["alerts[0].labels: label 'alertname' is missing; label 'service' is missing (and no 'app' label to use "
      "instead; 'job' is not taken)"]),
    ("label value not a string", lambda b: b["alerts"][0]["labels"].update(severity=3),
     ["alerts[0].labels.severity: Input should be a valid string"]),
    ("pending status", lambda b: b["alerts"][0].update(status="pending"),
     ["alerts[0].status: Input should be 'firing' or 'resolved'"]),
    ("no startsAt", lambda b: b["alerts"][0].pop("startsAt"), ["alerts[0].startsAt: required field is missing"]),
    ("two problems at once", lambda b: b["alerts"][0].update(status="x", annotations=[]),
     ["alerts[0].status: Input should be 'firing' or 'resolved'", "alerts[0].annotations: Input should be a valid "
      "dictionary"]),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in BAD_WEBHOOKS], ids=[c[0] for c in BAD_WEBHOOKS])
def test_a_malformed_webhook_is_refused_naming_the_field_of_the_alert(
    mutate: Callable[[dict], object], expected: list[str]
) -> None:
    body = copy.deepcopy(FIRING)
    mutate(body)
    assert problems_of(alertmanager_events, body) == expected


@pytest.mark.parametrize("body", [[FIRING], "firing", 4, None])
def test_a_body_that_is_not_an_object_is_refused(body: object) -> None:
    assert problems_of(alertmanager_events, body) == ["body: the body must be a JSON object"]


# ---------------------------------------------------------------- generic alerts


def test_a_generic_alert_becomes_an_alert_received_of_its_source() -> None:
    body = {"source": "uptime-robot", "alerts": [{
        "alertname": "SiteDown", "service": "shop", "status": "resolved", "severity": "page",
        "labels": {"region": "eu"}, "annotations": {"summary": "shop answers again"},
        "starts_at": "2026-11-21T04:17:08.638817295Z", "ends_at": "2026-11-21T04:20:00Z", "fingerprint": "robot-7",
        "generator_url": "https://uptime.example/7",
    }]}  # fmt: skip
    (event,) = generic_events(body, receipt())
    assert (event.source, event.alertname, event.service, event.status, event.severity) == (
        "uptime-robot", "SiteDown", "shop", "resolved", "critical")  # fmt: skip
    assert (event.labels, event.annotations) == ({"region": "eu"}, {"summary": "shop answers again"})
    assert (event.starts_at, event.ends_at) == (STARTED, datetime(2026, 11, 21, 4, 20, tzinfo=UTC))
    assert (event.source_fingerprint, event.generator_url) == ("robot-7", "https://uptime.example/7")
    assert generic_events(body, receipt(seconds=60))[0].event_id == event.event_id


def test_generic_defaults_and_an_alert_without_start_time_is_new_on_every_send() -> None:
    body = {"alerts": [{"alertname": "DiskFull", "service": "db", "labels": {"severity": "error"}}]}
    (event,) = generic_events(body, receipt())
    assert (event.source, event.status, event.severity, event.starts_at) == ("generic", "firing", "high", None)
    assert generic_events(body, receipt(seconds=1))[0].event_id != event.event_id
    dated = {"alerts": [{**body["alerts"][0], "starts_at": "2026-11-21T04:17:08Z"}]}
    assert generic_events(dated, receipt())[0].event_id == generic_events(dated, receipt(seconds=1))[0].event_id
    other_source = {"source": "other", **dated}
    assert generic_events(other_source, receipt())[0].event_id != generic_events(dated, receipt())[0].event_id


BAD_GENERIC: list[tuple[str, object, list[str]]] = [
    ("unknown field", {"alerts": [{"alertname": "A", "service": "s", "startsAt": "2026-11-21T04:17:08Z"}]},
     ["alerts[0].startsAt: unknown field"]),
    ("no service", {"alerts": [{"alertname": "A"}]}, ["alerts[0].service: required field is missing"]),
    ("empty alertname", {"alerts": [{"alertname": "", "service": "s"}]},
     ["alerts[0].alertname: String should have at least 1 character"]),
    ("bad source", {"source": "Bad Source!", "alerts": [{"alertname": "A", "service": "s"}]},
     ["source: String should match pattern '^[a-z0-9][a-z0-9_.-]{0,62}$'"]),
    ("no alerts", {"alerts": []}, ["alerts: List should have at least 1 item after validation, not 0"]),
    ("naive time", {"alerts": [{"alertname": "A", "service": "s", "starts_at": "2026-11-21T04:17:08"}]},
     ["alerts[0].starts_at: not an RFC 3339 timestamp with a timezone (such as 2026-11-21T04:17:08.638817295Z): "
      "'2026-11-21T04:17:08'"]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in BAD_GENERIC], ids=[c[0] for c in BAD_GENERIC])
def test_a_malformed_generic_body_is_refused_naming_the_field(body: object, expected: list[str]) -> None:
    assert problems_of(generic_events, body) == expected


# ---------------------------------------------------------------- the HTTP answers


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The real app (no lifespan: nothing connects to Kafka until a request is valid); Kafka is a closed port."""
    settings = BridgeSettings(
        kafka=KafkaConfig(bootstrap_servers="127.0.0.1:9", connect_timeout_s=1),
        bridge=BridgeConfig(token=SecretStr(TOKEN), max_body_bytes=16 * 1024, publish_timeout_s=1),
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge", timeout=10) as client:
        yield client


async def _chunks(total: int, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json", **AUTH}
BAD_REQUESTS: list[tuple[str, dict[str, str], object, int, str]] = [
    ("no token", {"content-type": "application/json"}, json.dumps(FIRING), 401, "unauthorized"),
    ("wrong token", {"content-type": "application/json", "authorization": "Bearer nope"}, json.dumps(FIRING), 401,
     "unauthorized"),
    ("basic auth", {"content-type": "application/json", "authorization": f"Basic {TOKEN}"}, json.dumps(FIRING), 401,
     "unauthorized"),
    ("text/plain", {**AUTH, "content-type": "text/plain"}, json.dumps(FIRING), 415, "unsupported_media_type"),
    ("no content type", AUTH, json.dumps(FIRING).encode(), 415, "unsupported_media_type"),
    ("form", {**AUTH, "content-type": "application/x-www-form-urlencoded"}, "a=1", 415, "unsupported_media_type"),
    ("over Content-Length", JSON, b" " * (16 * 1024 + 1), 413, "too_large"),
    ("over, streamed", JSON, "stream", 413, "too_large"),
    ("bad Content-Length", {**JSON, "content-length": "lots"}, b"{}", 400, "bad_request"),
    ("empty", JSON, b"", 400, "not_json"),
    ("not JSON", JSON, b"{'status': 'firing'}", 400, "not_json"),
    ("not UTF-8", JSON, b'{"a": "\xff\xfe"}', 400, "not_json"),
    ("nested too deep", JSON, b"[" * 6000 + b"]" * 6000, 400, "not_json"),
    ("wrong shape", JSON, json.dumps({"alerts": "x"}), 422, "invalid"),
    ("missing labels", JSON, json.dumps(changed(labels={"job": "x"})), 422, "invalid"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "content", "status", "reason"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
async def test_every_bad_request_gets_its_4xx_with_a_reason(
    client: httpx.AsyncClient, headers: dict[str, str], content: object, status: int, reason: str
) -> None:
    body = _chunks(20 * 1024) if content == "stream" else content
    response = await client.post("/alertmanager", headers=headers, content=body)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["error"] == reason and answer["detail"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith('Bearer realm="opswarm-bridge"')
        assert TOKEN not in response.text
    if status == 422:
        assert answer["problems"] and answer["problems"][0] in answer["detail"]
    metrics = (await client.get("/metrics")).text
    assert _sample(metrics, "opswarm_bridge_requests_rejected_total", endpoint="alertmanager", reason=reason) == 1
    assert _sample(metrics, "opswarm_bridge_alerts_received_total", endpoint="alertmanager") == 0


async def test_the_generic_endpoint_has_the_same_guards(client: httpx.AsyncClient) -> None:
    assert (await client.post("/alerts", json={"alerts": []})).status_code == 401
    response = await client.post("/alerts", headers=AUTH, json={"alerts": [{"alertname": "A"}]})
    assert response.status_code == 422
    assert response.json()["problems"] == ["alerts[0].service: required field is missing"]
    metrics = (await client.get("/metrics")).text
    assert _sample(metrics, "opswarm_bridge_requests_rejected_total", endpoint="alerts", reason="invalid") == 1


async def test_health_and_the_openapi_description(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    schema = (await client.get("/openapi.json")).json()
    for path, model in (("/alertmanager", "AlertmanagerWebhook"), ("/alerts", "GenericAlerts")):
        operation = schema["paths"][path]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model}"
        assert {"200", "400", "401", "413", "415", "422", "503"} <= operation["responses"].keys()
    components = schema["components"]["schemas"]
    assert {"AlertmanagerWebhook", "AlertmanagerAlert", "GenericAlerts", "GenericAlert", "Accepted", "Problem"} <= (
        components.keys())  # fmt: skip
    assert "startsAt" in components["AlertmanagerAlert"]["properties"]
    assert (await client.get("/docs")).status_code == 200


async def test_a_valid_alert_without_kafka_is_a_503_within_the_time_budget(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post("/alertmanager", headers=AUTH, json=FIRING)
    assert time.monotonic() - started < 1 + 0.5  # publish_timeout_s, and a margin
    assert (response.status_code, response.json()["error"]) == (503, "kafka_unavailable"), response.text
    assert response.headers["retry-after"] == "1"
    metrics = (await client.get("/metrics")).text
    assert _sample(metrics, "opswarm_bridge_alerts_received_total", endpoint="alertmanager") == 1
    assert _sample(metrics, "opswarm_bridge_alerts_published_total", endpoint="alertmanager") == 0


@pytest.mark.parametrize(
    ("header", "kept"),
    [("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True), ("00-nonsense", False), (None, False)],
)
def test_the_senders_trace_goes_on_when_its_traceparent_is_valid(header: str | None, kept: bool) -> None:
    trace = Receipt.now(header).trace
    assert (trace.traceparent == header) is kept


@pytest.mark.parametrize(("given", "level"), [("info", "INFO"), (" Debug", "DEBUG"), ("WARNING", "WARNING")])
def test_the_log_level_is_checked_and_upper_cased(given: str, level: str) -> None:
    assert BridgeSettings(log_level=given).log_level == level
    with pytest.raises(ValueError, match="must be one of"):
        BridgeSettings(log_level="loud")


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


@pytest.mark.parametrize("ends_at", [None, datetime(2026, 11, 21, 4, 30, tzinfo=UTC)])
@pytest.mark.parametrize("identity", ["fingerprint:9f3c", "labels:" + "ab" * 32, "fingerprint:ünïcødé"])
def test_alert_ids_are_the_uuid5s_of_their_names(identity: str, ends_at: datetime | None) -> None:
    """The ids are computed from SHA-1 directly; they must stay exactly uuid.uuid5's (re-sends keep their ids)."""
    start = datetime(2026, 11, 21, 4, 17, 8, 638817, tzinfo=UTC)
    event_id, correlation_id = alert_ids("alertmanager", identity, "resolved", start, ends_at)
    begin = start.isoformat(timespec="microseconds")
    end = "" if ends_at is None else ends_at.isoformat(timespec="microseconds")
    event_name = "\x1f".join(["event", "alertmanager", identity, "resolved", begin, end])
    correlation_name = "\x1f".join(["correlation", "alertmanager", identity, begin])
    assert event_id == str(uuid.uuid5(EVENT_ID_NAMESPACE, event_name))
    assert correlation_id == str(uuid.uuid5(EVENT_ID_NAMESPACE, correlation_name))
