"""Runbooks, postmortems and closed incidents as chunks in one Qdrant collection, found by hybrid search.

Each chunk (knowledge/document_chunks.py) is one point with two vectors: `dense`, the configured embedder's
(cosine), and `lexical`, a sparse vector of saturated term frequencies that Qdrant weighs with its IDF modifier
(knowledge/sparse_vectors.py). A query runs in one of three modes: `dense`, `sparse`, or `hybrid`, which
prefetches both rankings and fuses them with reciprocal rank fusion (RRF). Payload filters narrow every mode:
`type`, `service` (any of the chunk's services), `alertname`, `severity`, `source`.

The point id derives from (source, chunk index), every chunk carries its document's `content_hash`, and a document
is replaced as a whole (its old chunks deleted by `source`, then the new ones upserted), so ingesting again is
idempotent. The collection records the embedder's `model_id` and `dimension` in its metadata; opening it with
another embedder re-embeds every chunk from the text kept in its payload into a collection made anew (`reindex`):
vectors of two models never share the collection.

Every call to Qdrant runs under a timeout (a server's answer; local mode computes inside the call).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from qdrant_client import AsyncQdrantClient, models

from bus.events import KnowledgeHit
from knowledge.document_chunks import DocumentChunk
from knowledge.sparse_vectors import SparseTerms, document_terms, query_terms
from knowledge.text_vectors import Embedder, tokens

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "documents"
DENSE = "dense"
LEXICAL = "lexical"
SearchMode = Literal["hybrid", "dense", "sparse"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "dense", "sparse")
# Filter name -> payload field (exact match; on a list field, any element).
FILTERS = {"type": "type", "service": "services", "alertname": "alertnames", "severity": "severity", "source": "source"}
SNIPPET_CHARS = 280
_META_MODEL = "embedder_model_id"
_META_DIMENSION = "embedder_dimension"
_PREFETCH_FACTOR = 4
_PREFETCH_MIN = 20
_SCROLL_PAGE = 256
_UPSERT_BATCH = 128


@dataclasses.dataclass(frozen=True)
class DocumentHit:
    """One chunk found, with its score in the mode searched (RRF for hybrid, cosine for dense, BM25-like sparse)."""

    chunk_id: str
    score: float
    source: str
    title: str
    section: str
    type: str
    snippet: str
    payload: dict[str, Any]

    def as_knowledge_hit(self) -> KnowledgeHit:
        kind = self.type if self.type in ("runbook", "postmortem", "incident") else "runbook"
        return KnowledgeHit(
            doc_id=self.chunk_id, score=self.score, title=self.title, type=kind,  # type: ignore[arg-type]
            snippet=self.snippet, source=self.source, payload={"section": self.section, **self.payload},
        )  # fmt: skip


class DocumentStore:
    """The knowledge base's chunks in Qdrant. Call `open()` once before anything else."""

    def __init__(
        self, client: AsyncQdrantClient, embedder: Embedder, collection: str = DEFAULT_COLLECTION, *, timeout_s: float = 10.0
    ) -> None:
        self._client = client
        self._embedder = embedder
        self._collection = collection
        self._timeout_s = timeout_s

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    async def open(self) -> int:
        """Create the collection if missing; re-embed it if another embedder made it. Returns the chunks re-embedded."""
        if not await self._call(self._client.collection_exists(self._collection)):
            await self._create()
            return 0
        found = await self._recorded_embedder()
        if found == (self._embedder.model_id, self._embedder.dimension):
            await self._ensure_indexes()
            return 0
        return await self.reindex(found)

    async def reindex(self, found: tuple[Any, Any] | None = None) -> int:
        """Re-embed every chunk with the current embedder into the collection made anew."""
        chunks = [_chunk_of(pid, payload) async for pid, payload in self._payloads()]
        log.warning(
            "embedder changed: re-embedding the knowledge base",
            extra={"collection": self._collection, "found": str(found), "model_id": self._embedder.model_id,
                   "chunks": len(chunks)},
        )  # fmt: skip
        await self._call(self._client.delete_collection(self._collection))
        await self._create()
        for start in range(0, len(chunks), _UPSERT_BATCH):
            await self._upsert(chunks[start : start + _UPSERT_BATCH])
        return len(chunks)

    async def documents(self) -> dict[str, str]:
        """Every stored document: source -> content hash."""
        known: dict[str, str] = {}
        first = models.Filter(must=[models.FieldCondition(key="index", match=models.MatchValue(value=0))])
        async for _, payload in self._payloads(first, fields=["source", "content_hash"]):
            known[str(payload["source"])] = str(payload["content_hash"])
        return known

    async def replace_document(self, source: str, chunks: Sequence[DocumentChunk], *, existing: bool = True) -> int:
        """Store `source`'s chunks in place of whatever it had (`existing=False`: the caller knows it had nothing,
        which saves a delete by filter, a scan of every point in local mode); returns the chunks stored."""
        if any(c.source != source for c in chunks):
            raise ValueError(f"every chunk must belong to {source!r}")
        if existing:
            await self.remove_documents([source])
        for start in range(0, len(chunks), _UPSERT_BATCH):
            await self._upsert(list(chunks[start : start + _UPSERT_BATCH]))
        return len(chunks)

    async def remove_documents(self, sources: Sequence[str]) -> None:
        if not sources:
            return
        selector = models.FilterSelector(
            filter=models.Filter(must=[models.FieldCondition(key="source", match=models.MatchAny(any=list(sources)))])
        )
        await self._call(self._client.delete(self._collection, points_selector=selector, wait=True))

    async def count(self, filters: Mapping[str, str] | None = None) -> int:
        result = await self._call(self._client.count(self._collection, count_filter=_filter(filters), exact=True))
        return int(result.count)

    async def search(
        self, query: str, k: int = 5, *, mode: SearchMode = "hybrid", filters: Mapping[str, str] | None = None
    ) -> list[DocumentHit]:
        """The `k` best chunks for `query`, best first. An unknown filter or mode raises ValueError."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; known: {', '.join(SEARCH_MODES)}")
        where = _filter(filters)
        sparse = _sparse(query_terms(query))
        dense: list[float] | None = None
        if mode != "sparse":
            [dense] = await self._call(self._embedder.embed([query]))
        if mode == "dense":
            request: dict[str, Any] = {"query": dense, "using": DENSE}
        elif mode == "sparse":
            if not sparse.indices:
                return []
            request = {"query": sparse, "using": LEXICAL}
        else:
            depth = max(k * _PREFETCH_FACTOR, _PREFETCH_MIN)
            prefetch = [models.Prefetch(query=dense, using=DENSE, limit=depth, filter=where)]
            if sparse.indices:
                prefetch.append(models.Prefetch(query=sparse, using=LEXICAL, limit=depth, filter=where))
            request = {"prefetch": prefetch, "query": models.FusionQuery(fusion=models.Fusion.RRF)}
        response = await self._call(
            self._client.query_points(self._collection, **request, query_filter=where, limit=k, with_payload=True)
        )
        terms = set(tokens(query))
        return [_hit(point, terms) for point in response.points]

    async def _upsert(self, chunks: list[DocumentChunk]) -> None:
        if not chunks:
            return
        vectors = await self._call(self._embedder.embed([c.embedding_text() for c in chunks]))
        points = [
            models.PointStruct(
                id=chunk.chunk_id,
                vector={DENSE: vector, LEXICAL: _sparse(document_terms(chunk.embedding_text()))},
                payload=chunk.payload(),
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        await self._call(self._client.upsert(self._collection, points=points, wait=True))

    async def _payloads(self, where: models.Filter | None = None, fields: list[str] | bool = True):  # noqa: ANN202
        offset: Any = None
        while True:
            points, offset = await self._call(
                self._client.scroll(
                    self._collection, scroll_filter=where, limit=_SCROLL_PAGE, offset=offset,
                    with_payload=fields, with_vectors=False,
                )
            )  # fmt: skip
            for point in points:
                yield str(point.id), dict(point.payload or {})
            if offset is None:
                return

    async def _create(self) -> None:
        try:
            await self._call(
                self._client.create_collection(
                    self._collection,
                    vectors_config={
                        DENSE: models.VectorParams(size=self._embedder.dimension, distance=models.Distance.COSINE)
                    },
                    sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                    metadata={_META_MODEL: self._embedder.model_id, _META_DIMENSION: self._embedder.dimension},
                )
            )
            log.info("document collection created", extra={"collection": self._collection,
                                                           "model_id": self._embedder.model_id})  # fmt: skip
        except Exception:
            # Another opener (server mode) may have created it meanwhile; anything else is a real failure.
            if not await self._call(self._client.collection_exists(self._collection)):
                raise
        await self._ensure_indexes()

    async def _recorded_embedder(self) -> tuple[Any, Any]:
        info = await self._call(self._client.get_collection(self._collection))
        metadata = info.config.metadata or {}
        vectors = info.config.params.vectors
        dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
        if dense is None or dense.size != metadata.get(_META_DIMENSION):
            return (None, None)
        return (metadata.get(_META_MODEL), metadata.get(_META_DIMENSION))

    async def _ensure_indexes(self) -> None:
        with warnings.catch_warnings():
            # Local mode accepts the indexes but warns that it does not use them; a server does.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            for field in (*FILTERS.values(), "content_hash"):
                await self._call(
                    self._client.create_payload_index(self._collection, field, field_schema=models.PayloadSchemaType.KEYWORD)
                )
            await self._call(
                self._client.create_payload_index(self._collection, "index", field_schema=models.PayloadSchemaType.INTEGER)
            )

    async def _call(self, awaitable: Any) -> Any:
        async with asyncio.timeout(self._timeout_s):
            return await awaitable


def _filter(filters: Mapping[str, str] | None) -> models.Filter | None:
    conditions: list[models.Condition] = []
    for name, value in (filters or {}).items():
        if name not in FILTERS:
            raise ValueError(f"cannot filter the knowledge base on {name!r}; filterable: {', '.join(FILTERS)}")
        conditions.append(models.FieldCondition(key=FILTERS[name], match=models.MatchValue(value=value)))
    return models.Filter(must=conditions) if conditions else None


def _sparse(terms: SparseTerms) -> models.SparseVector:
    return models.SparseVector(indices=terms.indices, values=terms.values)


def _chunk_of(point_id: str, payload: Mapping[str, Any]) -> DocumentChunk:
    """The chunk a stored point was made from (its payload is every field of the chunk but the id)."""
    fields = {name: payload.get(name) for name in _CHUNK_FIELDS}
    for name in ("alertnames", "services"):
        fields[name] = tuple(fields.get(name) or ())
    return DocumentChunk(chunk_id=point_id, **fields)


def _hit(point: models.ScoredPoint, terms: set[str]) -> DocumentHit:
    payload = dict(point.payload or {})
    text = str(payload.pop("text", ""))
    return DocumentHit(
        chunk_id=str(point.id), score=float(point.score), source=str(payload.get("source", "")),
        title=str(payload.get("title", "")), section=str(payload.get("section", "")),
        type=str(payload.get("type", "")), snippet=best_snippet(text, terms), payload=payload,
    )  # fmt: skip


_CHUNK_FIELDS = [f.name for f in dataclasses.fields(DocumentChunk) if f.name != "chunk_id"]
_SENTENCE = re.compile(r"(?<=[.!?:])\s+|\n+")


def best_snippet(text: str, terms: set[str], limit: int = SNIPPET_CHARS) -> str:
    """The window of `text` (whole lines or sentences, at most `limit` characters) holding most query terms."""
    parts = [p.strip() for p in _SENTENCE.split(text) if p and p.strip()]
    if not parts:
        return ""
    best, best_hits = 0, -1
    for start, part in enumerate(parts):
        hits = len(terms.intersection(tokens(part)))
        if hits > best_hits:
            best, best_hits = start, hits
    window = parts[best]
    for part in parts[best + 1 :]:
        if len(window) + 1 + len(part) > limit:
            break
        window = f"{window} {part}"
    return window if len(window) <= limit else window[: limit - 1] + "…"
