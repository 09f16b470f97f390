"""The knowledge base's HTTP side (JSON API and UI) served by uvicorn in the test's own process, on a free loopback
port: for the browser tests and for `opswarm kb` talking to an agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from knowledge.incident_memory import IncidentMemory
from knowledge.kb_api import kb_router
from knowledge.kb_ui import IncidentPages, kb_ui_router
from knowledge.knowledge_base import KnowledgeBase
from tests.app_serving import serve_app


def ui_app(kb: KnowledgeBase, memory: IncidentMemory | None, incidents: IncidentPages | None) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(kb_router(kb))
    app.include_router(kb_ui_router(kb, memory, incidents))
    return app


@asynccontextmanager
async def serving(
    kb: KnowledgeBase, memory: IncidentMemory | None, incidents: IncidentPages | None
) -> AsyncIterator[str]:
    """The UI and the JSON API served on a free loopback port; its base URL. Stopped afterwards."""
    async with serve_app(ui_app(kb, memory, incidents)) as base_url:
        yield base_url
