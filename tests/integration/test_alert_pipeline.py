"""Prometheus → Alertmanager → webhook, for real: the stack's own Prometheus and Alertmanager components (their
generated config, rule file and argv) in a private state dir on free ports, and real demo targets with faults.

The parametrized cases post to an HTTP receiver of the test's own on the bridge's address, which records exactly
what Alertmanager sends. Each breaks one target in one way and shows: the generated rule fires in Prometheus,
Alertmanager posts the firing alert with the bearer token of `<state_dir>/bridge/token` and the labels the
diagnosis playbook reads, and posts the resolve once the fault is cleared. The last test puts the stack's real
bridge component (`python -m bus.bridge`) in the receiver's place and reads the AlertReceived events it publishes
on Kafka (in the test session's topic namespace).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pytest

from bus.bridge.settings import BridgeConfig
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.events import AlertReceived
from bus.topics import ALERTS
from deploy.localstack.alertmanager_server import alertmanager_component
from deploy.localstack.bridge_server import bridge_component
from deploy.localstack.bridge_token import read_token
from deploy.localstack.component import Component, wait_ready
from deploy.localstack.processes import ProcessRecord, spawn, terminate
from deploy.localstack.prometheus_server import prometheus_component
from deploy.prometheus_targets import register_target, unregister_target
from deploy.settings import Settings
from knowledge.markdown_documents import SourceDocument, read_document
from tests.integration.kafka_reading import TopicReader
from tests.integration.target_service_process import TargetProcess, running_target_service
from tests.services import free_tcp_port

pytestmark = pytest.mark.integration

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
# Firing: a scrape, the rule's `for`, a 5 s rate window at most, group_wait. Resolving: the rate window, group_interval.
_FIRE_TIMEOUT_S = 45.0
_RESOLVE_TIMEOUT_S = 45.0
_POLL_S = 0.2


@dataclass(frozen=True)
class Delivery:
    """One POST Alertmanager made to the receiver."""

    path: str
    authorization: str | None
    body: dict[str, Any]


class WebhookReceiver:
    """A plain HTTP server on the bridge's address that records every POST and answers 200."""

    def __init__(self, host: str, port: int) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.deliveries.append(Delivery(self.path, self.headers.get("Authorization"), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def alerts(self) -> list[tuple[Delivery, dict[str, Any]]]:
        """Every alert of every delivery so far, with the delivery it came in."""
        with self._lock:
            deliveries = list(self.deliveries)
        return [(d, alert) for d in deliveries for alert in d.body.get("alerts", [])]

    def find(self, alertname: str, service: str, status: str) -> tuple[Delivery, dict[str, Any]] | None:
        for delivery, alert in self.alerts():
            labels = alert.get("labels", {})
            if labels.get("alertname") == alertname and labels.get("service") == service and alert["status"] == status:
                return delivery, alert
        return None


@dataclass(frozen=True)
class Pipeline:
    settings: Settings
    receiver: WebhookReceiver
    token: str
    directory: Path


async def _run_component(component: Component, stack: AsyncExitStack) -> None:
    """Prepare, launch and wait for `component` as `opswarm up` does; stopped when `stack` closes."""
    await component.prepare()
    env = None if component.env is None else component.env()
    process = spawn(component.argv, log_file=component.log_file, cwd=component.data_dir, env=env)
    record = ProcessRecord(process.pid, component.argv, [p.port for p in component.ports])

    async def stop() -> None:
        await terminate(record, _STOP_TIMEOUT_S)
        process.wait(_STOP_TIMEOUT_S)

    stack.push_async_callback(stop)

    def exited() -> str | None:
        code = process.poll()
        return None if code is None else f"exit code {code}"

    await wait_ready(component, exited, _START_TIMEOUT_S)


def _private_settings(base: Settings, directory: Path, kafka: KafkaConfig | None = None) -> Settings:
    """`base` with a state dir in `directory` and free ports for Prometheus, Alertmanager and the bridge."""
    stack = base.stack.model_copy(update={"prometheus_port": free_tcp_port(), "alertmanager_port": free_tcp_port()})
    return base.model_copy(
        update={
            "state_dir": directory / "state",
            "stack": stack,
            "bridge": BridgeConfig(host="127.0.0.1", port=free_tcp_port()),
            "kafka": kafka or base.kafka,
        }
    )


@pytest.fixture(scope="module")
async def pipeline(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pipeline]:
    directory = tmp_path_factory.mktemp("alert-pipeline")
    private = _private_settings(settings, directory)
    async with AsyncExitStack() as stack:
        receiver = stack.enter_context(WebhookReceiver(private.bridge.host, private.bridge.port))
        await _run_component(alertmanager_component(private), stack)
        await _run_component(prometheus_component(private), stack)
        yield Pipeline(private, receiver, read_token(private.state_dir), directory)


async def _until(condition: Callable[[], Awaitable[Any] | Any], what: str, timeout_s: float) -> Any:
    """Poll `condition` (sync or async) until it returns something truthy; that value. AssertionError on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        await asyncio.sleep(_POLL_S)


async def _prometheus_alert(url: str, alertname: str, service: str) -> dict[str, Any] | None:
    """The rule's alert for `service` once Prometheus has it firing, else None."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        body = (await client.get(f"{url}/api/v1/alerts")).json()
    for alert in body["data"]["alerts"]:
        labels = alert["labels"]
        if labels.get("alertname") == alertname and labels.get("service") == service and alert["state"] == "firing":
            return alert
    return None


async def _has_sample(url: str, query: str) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as client:
        body = (await client.get(f"{url}/api/v1/query", params={"query": query})).json()
    return body.get("status") == "success" and bool(body["data"]["result"])


async def _post(target: TargetProcess, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.request(method, f"{target.base_url}{path}", json=body)
    assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"


@dataclass(frozen=True)
class Case:
    alertname: str
    severity: str
    fault: str
    params: dict[str, Any]
    extra_labels: Callable[[Pipeline, str], dict[str, str]]
    target_settings: dict[str, str]


def _no_labels(_pipeline: Pipeline, _service: str) -> dict[str, str]:
    return {}


def _disk_labels(pipeline: Pipeline, service: str) -> dict[str, str]:
    threshold = f"{4 * (1 << 20) * 0.9:.0f}"
    path = str(pipeline.settings.scenarios_dir() / service)
    return {"path": path, "min_age_s": "3600", "threshold_bytes": threshold}


CASES = [
    Case("ServiceDown", "critical", "crash", {}, _no_labels, {}),
    Case("HighErrorRate", "critical", "error_rate", {"rate": 0.5}, lambda p, s: {"error_ratio_threshold": "0.05"}, {}),
    Case("HighLatency", "warning", "latency", {"ms": 1500}, lambda p, s: {"latency_threshold_s": "1"}, {}),
    Case("ConnectionPoolExhausted", "critical", "pool_exhaustion", {}, _no_labels, {}),
    Case("DiskFull", "warning", "disk_fill", {"files": 4, "size_bytes": 1 << 20, "fresh_files": 0}, _disk_labels,
         {"disk_capacity_bytes": str(4 << 20)}),
    Case("DatabaseCorruption", "critical", "data_corruption", {}, _no_labels, {}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.alertname for c in CASES])
async def test_fault_fires_reaches_the_webhook_and_resolves(pipeline: Pipeline, case: Case) -> None:
    settings = pipeline.settings
    prometheus = settings.prometheus_url()
    service = f"demo-{case.fault.replace('_', '-')}"
    directory = pipeline.directory / service
    directory.mkdir()
    async with AsyncExitStack() as stack:
        target = await stack.enter_async_context(
            running_target_service(
                directory, service, self_traffic_rps="20", log_level="WARNING", **case.target_settings
            )
        )
        register_target(settings.state_dir, service, target.address, {"service": service, "env": "staging"})
        stack.callback(unregister_target, settings.state_dir, service)
        await _until(lambda: _has_sample(prometheus, f'demo_up{{service="{service}"}}'), "the target scraped", 30)

        await _post(target, "POST", f"/faults/{case.fault}", case.params)
        fired = await _until(
            lambda: _prometheus_alert(prometheus, case.alertname, service), f"{case.alertname} firing", _FIRE_TIMEOUT_S
        )
        delivery, alert = await _until(
            lambda: pipeline.receiver.find(case.alertname, service, "firing"),
            f"Alertmanager posting {case.alertname} firing for {service}",
            _FIRE_TIMEOUT_S,
        )
        expected = {
            "alertname": case.alertname,
            "service": service,
            "env": "staging",
            "severity": case.severity,
            "process": f"{service}.0",
            "verify_window_s": "5",
            **case.extra_labels(pipeline, service),
        }
        assert fired["labels"] == expected
        assert alert["labels"] == expected
        assert delivery.path == "/alertmanager"
        assert delivery.authorization == f"Bearer {pipeline.token}"
        assert delivery.body["receiver"] == "incident-webhook"
        assert delivery.body["groupLabels"] == {"alertname": case.alertname, "service": service}
        assert service in alert["annotations"]["summary"]
        assert case.alertname in _runbook_of(alert["annotations"]["runbook_url"]).alertnames

        if case.fault == "crash":
            # The service comes back (on a new port, as a new process): its target now answers again.
            target = await stack.enter_async_context(
                running_target_service(directory, service, self_traffic_rps="20", log_level="WARNING")
            )
            register_target(settings.state_dir, service, target.address, {"service": service, "env": "staging"})
        else:
            await _post(target, "DELETE", f"/faults/{case.fault}")
        await _until(
            lambda: pipeline.receiver.find(case.alertname, service, "resolved"),
            f"Alertmanager posting {case.alertname} resolved for {service}",
            _RESOLVE_TIMEOUT_S,
        )
    others = {a["labels"]["alertname"] for _, a in pipeline.receiver.alerts() if a["labels"]["service"] == service}
    assert others == {case.alertname}, f"{service} raised other alerts too: {others}"


async def test_an_alert_travels_through_the_real_bridge_to_kafka(
    settings: Settings, kafka_config: KafkaConfig, tmp_path: Path
) -> None:
    private = _private_settings(settings, tmp_path, kafka_config)
    prometheus = private.prometheus_url()
    service = "demo-through-bridge"

    def alert_events(records: list[Any], status: str) -> list[AlertReceived]:
        events = [decode_event(r.value) for r in records if r.key == service.encode()]
        return [e for e in events if isinstance(e, AlertReceived) and e.status == status]

    async with AsyncExitStack() as stack:
        await _run_component(bridge_component(private), stack)
        await _run_component(alertmanager_component(private), stack)
        await _run_component(prometheus_component(private), stack)
        reader = await stack.enter_async_context(TopicReader(kafka_config, [kafka_config.topic(ALERTS)]))
        target = await stack.enter_async_context(
            running_target_service(tmp_path, service, self_traffic_rps="20", log_level="WARNING")
        )
        register_target(private.state_dir, service, target.address, {"service": service, "env": "staging"})
        await _until(lambda: _has_sample(prometheus, f'demo_up{{service="{service}"}}'), "the target scraped", 30)

        await _post(target, "POST", "/faults/error_rate", {"rate": 1.0})
        await reader.until(lambda records: bool(alert_events(records, "firing")), _FIRE_TIMEOUT_S)
        fired = alert_events(reader.records, "firing")[0]
        assert (fired.source, fired.alertname, fired.service, fired.severity) == (
            "alertmanager", "HighErrorRate", service, "critical"
        )
        assert {k: fired.labels.get(k) for k in ("env", "process", "verify_window_s", "error_ratio_threshold")} == {
            "env": "staging", "process": f"{service}.0", "verify_window_s": "5", "error_ratio_threshold": "0.05"
        }
        assert "HighErrorRate" in _runbook_of(fired.annotations["runbook_url"]).alertnames

        await _post(target, "DELETE", "/faults/error_rate")
        await reader.until(lambda records: bool(alert_events(records, "resolved")), _RESOLVE_TIMEOUT_S)
        resolved = alert_events(reader.records, "resolved")[0]
        assert resolved.correlation_id == fired.correlation_id
        assert resolved.ends_at is not None


def _runbook_of(url: str) -> SourceDocument:
    """The runbook a `runbook_url` annotation names (a file:// URL of the checkout's demo runbooks)."""
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return read_document(Path(unquote(parsed.path)))
