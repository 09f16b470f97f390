"""The bridge's FastAPI app: two intake endpoints, health, readiness, metrics, and its OpenAPI description.

- POST /alertmanager: Alertmanager webhook bodies (version 4).
- POST /alerts: generic alerts, `{"source": ..., "alerts": [{"alertname", "service", "status", ...}]}`.
  Both answer 200 `{"accepted": N, "event_ids": [...]}` only once Kafka acknowledged every event; 503 when it
  did not within `bridge.publish_timeout_s`, or at once when more than `bridge.max_inflight_alerts` alerts would
  be in flight ("overloaded", see admission); the sender retries after a 503 (Retry-After). 400/401/408/413/415/
  422 with a Problem body.
- GET /healthz: 200 while the process serves. GET /readyz: 200 when a producer is started and the broker
  answers with the alerts topic's metadata (within 1 s), else 503 with the reason.
- GET /metrics: the app's own registry (several apps may live in one process, as in the tests), with the
  alerts in flight and their limit.
- GET /openapi.json, /docs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from bus.bridge.admission import Admission, unavailable
from bus.bridge.alert_events import Receipt, alertmanager_events, encoded_events, generic_events
from bus.bridge.alert_payloads import AlertmanagerWebhook, GenericAlerts
from bus.bridge.intake import check_content_type, check_token, decode_json, read_body
from bus.bridge.kafka_link import KafkaLink, KafkaUnavailable
from bus.bridge.rejections import Problem, Rejection
from bus.bridge.settings import BridgeSettings
from bus.events import AlertReceived

log = logging.getLogger(__name__)

ENDPOINTS = ("alertmanager", "alerts")
READINESS_TIMEOUT_S = 1.0

Parse = Callable[[object, Receipt], list[AlertReceived]]


class Accepted(BaseModel):
    """Every alert was published and acknowledged by Kafka."""

    accepted: int = Field(description="number of alerts published")
    event_ids: list[str] = Field(description="the AlertReceived event ids, in the order of the alerts")


@dataclass(frozen=True)
class BridgeMetrics:
    registry: CollectorRegistry
    received: Counter
    published: Counter
    rejected: Counter
    publish_seconds: Histogram
    in_flight: Gauge
    in_flight_limit: Gauge

    @classmethod
    def create(cls, admission: Admission) -> BridgeMetrics:
        registry = CollectorRegistry(auto_describe=True)
        metrics = cls(
            registry=registry,
            received=Counter("opswarm_bridge_alerts_received_total", "Valid alerts received, before publishing",
                             ["endpoint"], registry=registry),
            published=Counter("opswarm_bridge_alerts_published_total", "Alerts Kafka acknowledged",
                              ["endpoint"], registry=registry),
            rejected=Counter("opswarm_bridge_requests_rejected_total", "Requests answered 4xx or 5xx, by reason",
                             ["endpoint", "reason"], registry=registry),
            publish_seconds=Histogram("opswarm_bridge_publish_seconds", "Publishing one request's alerts, "
                                      "until acknowledged or given up", registry=registry),
            in_flight=Gauge("opswarm_bridge_alerts_in_flight", "Alerts of admitted requests that Kafka has not "
                            "acknowledged yet", registry=registry),
            in_flight_limit=Gauge("opswarm_bridge_alerts_in_flight_limit", "Alerts in flight past which requests "
                                  "are refused (503 overloaded)", registry=registry),
        )  # fmt: skip
        metrics.in_flight.set_function(lambda: admission.in_flight)
        metrics.in_flight_limit.set(admission.limit)
        for endpoint in ENDPOINTS:  # the series exist (at 0) before the first alert
            metrics.received.labels(endpoint)
            metrics.published.labels(endpoint)
        return metrics


def create_app(settings: BridgeSettings) -> FastAPI:
    config = settings.bridge
    link = KafkaLink(settings.kafka)
    admission = Admission(config.max_inflight_alerts)
    metrics = BridgeMetrics.create(admission)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await link.connect(config.publish_timeout_s)
        try:
            yield
        finally:
            await link.close()

    app = FastAPI(
        title="opswarm alert bridge",
        version="1",
        description="Alertmanager webhooks and generic JSON alerts in, AlertReceived events on Kafka out.",
        lifespan=lifespan,
    )

    async def intake(request: Request, endpoint: str, parse: Parse) -> JSONResponse:
        started = time.monotonic()
        try:
            check_token(request.headers.get("authorization"), config.token)
            check_content_type(request.headers.get("content-type"))
            raw = await read_body(request, config.max_body_bytes, config.body_timeout_s)
            admission.refuse_if_full()  # before parsing: an overloaded bridge spends nothing on what it refuses
            events = parse(decode_json(raw), Receipt.now(request.headers.get("traceparent")))
            values = encoded_events(events)
            with admission.admit(len(events)):
                metrics.received.labels(endpoint).inc(len(events))
                await _publish(link, metrics, events, values, config.publish_timeout_s)
        except Rejection as rejection:
            metrics.rejected.labels(endpoint, rejection.reason).inc()
            level = logging.WARNING if rejection.status >= 500 else logging.INFO
            log.log(level, "request rejected", extra={
                "endpoint": endpoint, "status": rejection.status, "reason": rejection.reason,
                "detail": rejection.detail, "client": request.client.host if request.client else None,
            })  # fmt: skip
            return JSONResponse(rejection.body(), status_code=rejection.status, headers=rejection.headers)
        metrics.published.labels(endpoint).inc(len(events))
        event_ids = [event.event_id for event in events]
        log.info("alerts published", extra={
            "endpoint": endpoint, "alerts": len(events), "event_ids": event_ids,
            "seconds": round(time.monotonic() - started, 4),
        })  # fmt: skip
        return JSONResponse({"accepted": len(event_ids), "event_ids": event_ids})  # the Accepted model

    @app.post(
        "/alertmanager", response_model=Accepted, responses=_ERROR_RESPONSES,
        openapi_extra=_request_body(AlertmanagerWebhook), summary="Alertmanager webhook (version 4)",
    )  # fmt: skip
    async def alertmanager(request: Request) -> JSONResponse:
        """Each alert becomes one AlertReceived (source "alertmanager"); the labels carry alertname, service (or
        app) and severity. A re-sent notification yields the same event ids."""
        return await intake(request, "alertmanager", alertmanager_events)

    @app.post(
        "/alerts", response_model=Accepted, responses=_ERROR_RESPONSES, openapi_extra=_request_body(GenericAlerts),
        summary="Generic JSON alerts",
    )  # fmt: skip
    async def alerts(request: Request) -> JSONResponse:
        """Each alert becomes one AlertReceived with the body's `source` (default "generic"). Give `starts_at`
        (and `ends_at` on a resolve) so that a re-sent alert yields the same event id."""
        return await intake(request, "alerts", generic_events)

    @app.get("/healthz", summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", summary="Ready: Kafka reachable", responses={503: {"model": Problem}})
    async def readyz() -> JSONResponse:
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_S):
                problem = await link.problem()
        except TimeoutError:
            problem = f"kafka: no answer within {READINESS_TIMEOUT_S:g} s"
        if problem is not None:
            return JSONResponse(Problem(error="not_ready", detail=problem).model_dump(), status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _describe_request_bodies(app, [AlertmanagerWebhook, GenericAlerts])
    return app


async def _publish(
    link: KafkaLink, metrics: BridgeMetrics, events: list[AlertReceived], values: list[bytes], timeout_s: float
) -> None:
    with metrics.publish_seconds.time():
        try:
            await link.publish(events, values, timeout_s)
        except KafkaUnavailable as exc:
            raise unavailable("publish_timeout" if exc.timed_out else "kafka_unavailable", exc.detail) from None


_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": Problem, "description": "empty body, not JSON, bad Content-Length"},
    401: {"model": Problem, "description": "no or wrong bearer token (when the bridge has one)"},
    408: {"model": Problem, "description": "the body did not arrive within bridge.body_timeout_s"},
    413: {"model": Problem, "description": "body over bridge.max_body_bytes, or an alert too large for Kafka"},
    415: {"model": Problem, "description": "Content-Type is not application/json"},
    422: {"model": Problem, "description": "wrong shape or missing labels; `problems` names each field"},
    503: {"model": Problem, "description": "Kafka did not acknowledge in time, or too many alerts in flight "
                                           "(overloaded); retry after Retry-After (same body, same event ids)"},
}


def _request_body(model: type[BaseModel]) -> dict[str, object]:
    """The body is read by hand (bounded, 400/413/415 before parsing); this only documents it."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _describe_request_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """FastAPI's OpenAPI plus the request body models (and the models they use) under components/schemas."""

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _, definitions = models_json_schema(
                [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
