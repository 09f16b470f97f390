"""The demo target service's HTTP API: real work to break, faults to break it with, and the metrics that show it.

    GET  /                  the work: 200, or 500 (bad version, error_rate), 503 (pool exhausted), after latency
    GET  /healthz           200 while the process serves (faults do not change it)
    GET  /metrics           Prometheus exposition (see metrics.py)
    GET  /faults            the standing faults, the pool, the data dir's usage
    POST /faults/{kind}     inject a fault (JSON params, see faults.py); 404 unknown kind, 422 bad params
    DELETE /faults/{kind}   clear one standing fault (disk_fill: delete the fill files); DELETE /faults: all
    POST /admin/pool/flush  drop leaked connections: what the flush_connection_pool action calls

With `self_traffic_rps` > 0 a background task runs the handler of `/` itself at that rate (no HTTP), so the
request counters move without a load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any, cast, get_args

from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.background import BackgroundTask

from deploy.target_service.faults import (
    CLEARABLE_KINDS,
    PARAMS_MODELS,
    ConnectionPool,
    DataCorruptionParams,
    DiskFillParams,
    ErrorRateParams,
    FaultKind,
    FaultParams,
    FaultState,
    LatencyParams,
    PoolExhaustionParams,
    disk_usage,
    fill_disk,
    remove_fill_files,
)
from deploy.target_service.metrics import TargetMetrics
from deploy.target_service.settings import TargetSettings

log = logging.getLogger(__name__)

# Self traffic stops adding requests while this many of its own are still in flight (e.g. under latency).
_MAX_SELF_IN_FLIGHT = 1000
CRASH_EXIT_CODE = 1


class PoolFlushRequest(BaseModel):
    """The body the flush_connection_pool action sends: `{"action": "flush_connection_pool", "pool": ...}`."""

    model_config = ConfigDict(extra="ignore")

    action: str | None = None
    pool: str | None = None


class TargetService:
    """One process's state — its settings, standing faults, pool and metrics — and the work of `/`."""

    def __init__(self, settings: TargetSettings) -> None:
        self.settings = settings
        self.pool = ConnectionPool(settings.pool_name, settings.pool_size)
        self.faults = FaultState(pool=self.pool)
        self.metrics = TargetMetrics(
            settings.name, settings.version, settings.disk_dir(), settings.disk_capacity_bytes, self.pool, self.faults
        )
        self._self_in_flight = 0

    async def work(self) -> int:
        """Handle one request of `/`; returns its status code (counted in the metrics)."""
        started = time.perf_counter()
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if not self.pool.acquire():
            code = 503
        else:
            try:
                failing = self.faults.next_request_fails()
                code = 500 if self.settings.serves_errors() or failing else 200
            finally:
                self.pool.release()
        self.metrics.observe(code, time.perf_counter() - started)
        return code

    async def run_self_traffic(self, rps: float) -> None:
        """Call `work` `rps` times a second, each call a task of its own, until cancelled."""
        loop = asyncio.get_running_loop()
        interval = 1 / rps
        next_at = loop.time()
        log.info("self traffic started", extra={"rps": rps})
        async with asyncio.TaskGroup() as group:
            while True:
                if self._self_in_flight < _MAX_SELF_IN_FLIGHT:
                    group.create_task(self._self_request())
                next_at = max(next_at + interval, loop.time())  # fallen behind: carry on, no burst
                await asyncio.sleep(next_at - loop.time())

    async def _self_request(self) -> None:
        self._self_in_flight += 1
        try:
            await self.work()
        finally:
            self._self_in_flight -= 1

    def describe(self) -> dict[str, Any]:
        usage = disk_usage(self.settings.disk_dir())
        disk = {"path": str(self.settings.disk_dir()), **dataclasses.asdict(usage)}
        return {
            "service": self.settings.name,
            "version": self.settings.version,
            "faulty_version": self.settings.serves_errors(),
            **self.faults.describe(),
            "disk": disk,
            "self_traffic_rps": self.settings.self_traffic_rps,
        }

    async def inject(self, kind: FaultKind, params: FaultParams) -> dict[str, Any]:
        """Apply a standing fault or a disk fill (the route handles crash)."""
        result: dict[str, Any] = {"kind": kind, "params": params.model_dump()}
        match params:
            case LatencyParams(ms=ms):
                self.faults.latency_ms = ms
            case ErrorRateParams(rate=rate):
                self.faults.set_error_rate(rate)
            case DiskFillParams():
                written = await asyncio.to_thread(fill_disk, self.settings.disk_dir(), params)
                result["files_written"] = len(written)
            case PoolExhaustionParams():
                self.pool.leak_all()
            case DataCorruptionParams(table=table):
                self.faults.corrupted_table = table
        log.warning("fault injected", extra={"service": self.settings.name, **result})
        return result

    async def clear(self, kind: FaultKind) -> dict[str, Any]:
        result: dict[str, Any] = {"kind": kind}
        match kind:
            case "latency":
                self.faults.latency_ms = 0
            case "error_rate":
                self.faults.set_error_rate(0.0)
            case "disk_fill":
                result["files_removed"] = await asyncio.to_thread(remove_fill_files, self.settings.disk_dir())
            case "pool_exhaustion":
                result["flushed"] = self.pool.flush()
            case "data_corruption":
                self.faults.corrupted_table = None
        log.info("fault cleared", extra={"service": self.settings.name, "kind": kind})
        return result


def build_app(service: TargetService) -> FastAPI:
    settings = service.settings
    identity = {"service": settings.name, "version": settings.version}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings.disk_dir().mkdir(parents=True, exist_ok=True)
        log.info("target service started", extra={**identity, "port": settings.port})
        traffic = None
        if settings.self_traffic_rps > 0:
            traffic = asyncio.create_task(service.run_self_traffic(settings.self_traffic_rps))
        try:
            yield
        finally:
            if traffic is not None:
                traffic.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await traffic

    app = FastAPI(title=f"opswarm demo target {settings.name}", lifespan=lifespan)

    @app.get("/")
    async def work() -> JSONResponse:
        code = await service.work()
        return JSONResponse({**identity, "code": code}, status_code=code)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {**identity, "status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        body = await asyncio.to_thread(service.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/faults")
    async def faults() -> dict[str, Any]:
        return await asyncio.to_thread(service.describe)

    @app.post("/faults/{kind}")
    async def inject(kind: str, params: dict[str, Any] | None = Body(default=None)) -> JSONResponse:
        fault = _known_kind(kind)
        try:
            parsed = PARAMS_MODELS[fault].model_validate(params or {})
        except ValidationError as exc:
            raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
        if fault == "crash":
            log.error("crash requested: exiting", extra={**identity, "exit_code": CRASH_EXIT_CODE})
            answer = {"kind": "crash", "exit_code": CRASH_EXIT_CODE}
            return JSONResponse(answer, status_code=202, background=BackgroundTask(_crash))
        return JSONResponse(await service.inject(fault, parsed))

    @app.delete("/faults/{kind}")
    async def clear(kind: str) -> dict[str, Any]:
        fault = _known_kind(kind)
        if fault == "crash":
            raise HTTPException(409, "a crash is not a standing fault: there is nothing to clear")
        return await service.clear(fault)

    @app.delete("/faults")
    async def clear_all() -> dict[str, Any]:
        return {"cleared": [await service.clear(kind) for kind in CLEARABLE_KINDS]}

    @app.post("/admin/pool/flush")
    async def flush_pool(request: PoolFlushRequest | None = Body(default=None)) -> dict[str, Any]:
        if request is not None and request.pool not in (None, service.pool.name):
            raise HTTPException(404, f"no pool named {request.pool!r} (this service has {service.pool.name!r})")
        flushed = service.pool.flush()
        log.info("pool flushed", extra={**identity, "pool": service.pool.name, "flushed": flushed})
        return {"pool": service.pool.name, "flushed": flushed, "in_use": service.pool.in_use}

    return app


def _known_kind(kind: str) -> FaultKind:
    known: tuple[str, ...] = get_args(FaultKind)
    if kind not in known:
        raise HTTPException(404, f"unknown fault kind {kind!r}; known: {', '.join(known)}")
    return cast(FaultKind, kind)


async def _crash() -> None:
    """Runs once the crash answer is sent: a real crash, no cleanup, no graceful shutdown."""
    os._exit(CRASH_EXIT_CODE)
