"""The knowledge base's HTTP side (JSON API and UI) served by uvicorn in the test's own process, on a free loopback
port: for the browser tests and for `opswarm kb` talking to an agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from fastapi import FastAPI

from knowledge.incident_memory import IncidentMemory
from knowledge.kb_api import kb_router
from knowledge.kb_ui import IncidentPages, kb_ui_router
from knowledge.knowledge_base import KnowledgeBase
from tests.services import free_tcp_port

_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


def ui_app(kb: KnowledgeBase, memory: IncidentMemory | None, incidents: IncidentPages | None) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(kb_router(kb))
    app.include_router(kb_ui_router(kb, memory, incidents))
    return app


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test decides when it stops."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@asynccontextmanager
async def serving(
    kb: KnowledgeBase, memory: IncidentMemory | None, incidents: IncidentPages | None
) -> AsyncIterator[str]:
    """The UI served by uvicorn in this process on a free loopback port; its base URL. Stopped afterwards."""
    port = free_tcp_port()
    config = uvicorn.Config(
        ui_app(kb, memory, incidents), host="127.0.0.1", port=port, log_config=None, access_log=False,
        lifespan="off", timeout_graceful_shutdown=2,
    )  # fmt: skip
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(_START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError("uvicorn stopped before it started serving")
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, _STOP_TIMEOUT_S)
