"""The knowledge base's JSON API, mounted on the knowledge agent's HTTP server (and used by `opswarm kb`).

- GET  /kb/search?q=TEXT&k=5&type=&service=&alertname=&severity=&mode=hybrid   results, best first
- GET  /kb/documents                      every stored document: source and content hash
- POST /kb/documents  {"documents": [{"source", "text"}]}   parse, chunk and store (unchanged ones skipped);
       one result per document, a document that does not parse is `failed` with the reason (the others go on)
- POST /kb/prune      {"roots": [dir...], "keep": [source...]}   remove documents under roots not kept

Bad input answers 422 with the reason (FastAPI's validation, or ours for an unknown filter); a store that fails
answers 503.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from knowledge.document_store import DocumentHit, SearchMode
from knowledge.knowledge_base import DocumentResult, IngestReport, KnowledgeBase
from knowledge.markdown_documents import DOC_TYPES, DocType, DocumentError, parse_document

log = logging.getLogger(__name__)

MAX_DOCUMENTS_PER_REQUEST = 200
MAX_DOCUMENT_CHARS = 2_000_000


class SearchResult(BaseModel):
    source: str
    title: str
    section: str
    type: str
    score: float
    snippet: str
    chunk_id: str
    alertnames: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, hit: DocumentHit) -> SearchResult:
        return cls(
            source=hit.source, title=hit.title, section=hit.section, type=hit.type, score=hit.score,
            snippet=hit.snippet, chunk_id=hit.chunk_id, alertnames=list(hit.payload.get("alertnames") or []),
            services=list(hit.payload.get("services") or []),
        )  # fmt: skip


class SearchAnswer(BaseModel):
    query: str
    mode: SearchMode
    results: list[SearchResult]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=4096)
    text: str = Field(max_length=MAX_DOCUMENT_CHARS)


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(max_length=MAX_DOCUMENTS_PER_REQUEST)


class DocumentResultOut(BaseModel):
    source: str
    outcome: str
    chunks: int
    error: str = ""


class IngestAnswer(BaseModel):
    results: list[DocumentResultOut]


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roots: list[str] = Field(min_length=1)
    keep: list[str] = Field(default_factory=list)


def search_filters(
    type: DocType | None = None, service: str | None = None, alertname: str | None = None, severity: str | None = None
) -> dict[str, str]:
    """The filters given (empty ones left out)."""
    given = {"type": type, "service": service, "alertname": alertname, "severity": severity}
    return {name: value for name, value in given.items() if value}


async def ingest_texts(kb: KnowledgeBase, documents: list[DocumentIn]) -> IngestReport:
    """Parse each text (a parse error is that document's failure) and ingest the rest."""
    parsed, failed = [], []
    for doc in documents:
        try:
            parsed.append(parse_document(doc.source, doc.text))
        except DocumentError as exc:
            failed.append(DocumentResult(doc.source, "failed", error=str(exc)))
    report = await kb.ingest(parsed)
    report.results.extend(failed)
    return report


def kb_router(kb: KnowledgeBase) -> APIRouter:
    router = APIRouter(prefix="/kb", tags=["knowledge base"])

    @router.get("/search", response_model=SearchAnswer, summary="Search runbooks, postmortems and incidents")
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=2000, description="what to look for")],
        k: Annotated[int, Query(ge=1, le=100)] = 5,
        type: Annotated[DocType | None, Query(description=f"one of {', '.join(DOC_TYPES)}")] = None,
        service: str | None = None,
        alertname: str | None = None,
        severity: str | None = None,
        mode: SearchMode = "hybrid",
    ) -> SearchAnswer:
        filters = search_filters(type, service, alertname, severity)
        hits = await _store_call(kb.search(q, k, mode=mode, filters=filters))
        return SearchAnswer(query=q, mode=mode, results=[SearchResult.of(h) for h in hits])

    @router.get("/documents", summary="The stored documents and their content hashes")
    async def documents() -> dict[str, Any]:
        known = await _store_call(kb.store.documents())
        return {"documents": [{"source": s, "content_hash": h} for s, h in sorted(known.items())]}

    @router.post("/documents", response_model=IngestAnswer, summary="Store Markdown documents")
    async def ingest(request: IngestRequest) -> IngestAnswer:
        report = await _store_call(ingest_texts(kb, request.documents))
        return IngestAnswer(results=[DocumentResultOut(**vars(r)) for r in report.results])

    @router.post("/prune", summary="Remove documents under directories that are gone from them")
    async def prune(request: PruneRequest) -> dict[str, list[str]]:
        return {"removed": await _store_call(kb.prune(request.roots, set(request.keep)))}

    return router


async def _store_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    except Exception as exc:
        log.warning("knowledge base call failed", exc_info=True)
        raise HTTPException(503, f"the knowledge base is unavailable: {type(exc).__name__}: {exc}") from exc
