"""An agent process's HTTP side: /healthz, /readyz, /metrics and the agent's own routes, served by uvicorn in-process.

`AgentHttp` says where to listen and what to add; `run_agent` binds it before anything else starts (a port in use
fails the process at once, and the bound port — the one picked for port 0 — goes into every heartbeat), then
serves until the stop event is set. uvicorn's own signal handling is left out: the agent's stop event rules.

- GET /healthz: 200 while the process serves at all.
- GET /readyz: 200 when every readiness check passes (each within 1 s), else 503 with the reasons.
- GET /metrics: prometheus-client's text exposition of the default REGISTRY.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from scheduler.agent_settings import AgentSettings

log = logging.getLogger(__name__)

# None when ready, else why not (one line, shown in /readyz's 503 body).
ReadinessCheck = Callable[[], Awaitable[str | None]]

READINESS_TIMEOUT_S = 1.0
# A client keeping a request open must not hold the agent's shutdown longer than this.
_GRACEFUL_SHUTDOWN_S = 5.0


@dataclass
class AgentHttp:
    """Where an agent listens (port 0: any free port) and what it adds: routers and readiness checks."""

    host: str
    port: int
    routers: Sequence[APIRouter] = ()
    readiness: Sequence[ReadinessCheck] = ()
    # The port actually listened on, once bound.
    bound_port: int | None = field(default=None, init=False)
    _socket: socket.socket | None = field(default=None, init=False, repr=False)

    def bind(self) -> int:
        """Open the listening socket now (OSError if the port is taken); the bound port."""
        if self._socket is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._socket = socket.create_server((self.host, self.port), family=family)
            self.bound_port = int(self._socket.getsockname()[1])
            log.info("agent http bound", extra={"host": self.host, "port": self.bound_port})
        assert self.bound_port is not None
        return self.bound_port

    async def serve(self, app: FastAPI, stop: asyncio.Event) -> None:
        """Serve `app` on the bound socket until `stop` is set, then close connections and return."""
        self.bind()
        assert self._socket is not None
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S
        )
        server = _ServerWithoutSignals(config)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(server.serve(sockets=[self._socket]))
                await stop.wait()
                server.should_exit = True
        finally:
            self.close()
        log.info("agent http stopped", extra={"port": self.bound_port})

    def close(self) -> None:
        """Close the listening socket (if `serve` never ran, say); idempotent."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def agent_http(
    settings: AgentSettings, *, routers: Sequence[APIRouter] = (), readiness: Sequence[ReadinessCheck] = ()
) -> AgentHttp | None:
    """The HTTP side an agent's settings ask for: None when `http_port` is None (HTTP off)."""
    if settings.http_port is None:
        return None
    return AgentHttp(settings.http_host, settings.http_port, routers=routers, readiness=readiness)


class _ServerWithoutSignals(uvicorn.Server):
    """uvicorn would take SIGTERM/SIGINT for itself; the agent's stop event decides when to stop."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def agent_app(
    agent: str,
    instance_id: str,
    readiness: Sequence[ReadinessCheck],
    before_metrics: Callable[[], Awaitable[object]],
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The FastAPI app of one agent; `before_metrics` refreshes what a collector cannot await (consumer lag)."""
    app = FastAPI(title=f"opswarm {agent}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "agent": agent, "instance_id": instance_id}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        reasons = await failed_checks(readiness)
        body = {"status": "not ready" if reasons else "ready", "agent": agent, "instance_id": instance_id}
        if reasons:
            return JSONResponse({**body, "reasons": reasons}, status_code=503)
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        try:
            await before_metrics()
        except Exception:  # the last measured values are still worth serving
            log.warning("metrics refresh failed", extra={"agent": agent}, exc_info=True)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    return app


async def failed_checks(checks: Sequence[ReadinessCheck]) -> list[str]:
    """Run every check concurrently, each bounded by READINESS_TIMEOUT_S; the reasons of those that failed."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_bounded(check)) for check in checks]
    return [reason for task in tasks if (reason := task.result()) is not None]


async def _bounded(check: ReadinessCheck) -> str | None:
    name = getattr(check, "__name__", "readiness check")
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            return await check()
    except TimeoutError:
        return f"{name}: no answer within {READINESS_TIMEOUT_S:g} s"
    except Exception as exc:  # a check that raises is a failed check, not a failed endpoint
        return f"{name}: {type(exc).__name__}: {exc}"
