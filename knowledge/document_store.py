"""Runbooks, postmortems and closed incidents as chunks in one Qdrant collection, found by hybrid search.

Each chunk (knowledge/document_chunks.py) is one point with two vectors: `dense`, the configured embedder's
(cosine), and `lexical`, a sparse vector of saturated term frequencies that Qdrant weighs with its IDF modifier
(knowledge/sparse_vectors.py). A query runs in one of three modes: `dense`, `sparse`, or `hybrid`, which
prefetches both rankings and fuses them with reciprocal rank fusion (RRF). Payload filters narrow every mode:
`type`, `service` (any of the chunk's services), `alertname`, `severity`, `source`; a filter's value is one
string, or several (any of them matches: `{"type": ("runbook", "postmortem")}`).

The point id derives from (source, chunk index), every chunk carries its document's `content_hash`, and a document
is replaced as a whole (its old chunks deleted by `source`, then the new ones upserted), so ingesting again is
idempotent. The collection records the embedder's `model_id` and `dimension` in its metadata; opening it with
another embedder re-embeds every chunk from the text kept in its payload into a collection made anew (`reindex`):
vectors of two models never share the collection.

In Qdrant's local (path) mode the store keeps a `LexicalIndex` (knowledge/lexical_index.py) of the lexical
vectors and filterable fields, built on open and updated on every write it makes (a local directory admits one
process, so it is the only writer): sparse search and hybrid's sparse side run there, with Qdrant's scores, while
the dense side still runs in Qdrant; the two rankings are fused with Qdrant's RRF and the final chunks' payloads
fetched by id. Local mode's own sparse search walks every stored vector in Python. A server needs no index.

Every call to Qdrant runs under a timeout (a server's answer; local mode computes inside the call).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from qdrant_client import AsyncQdrantClient, models

from knowledge.document_chunks import DocumentChunk, chunk_id
from knowledge.document_hits import DocumentHit, hit_of
from knowledge.lexical_index import LexicalIndex, reciprocal_rank_fusion
from knowledge.sparse_vectors import SparseTerms, document_terms, query_terms
from knowledge.text_vectors import Embedder, tokens

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "documents"
DENSE = "dense"
LEXICAL = "lexical"
SearchMode = Literal["hybrid", "dense", "sparse"]
# One value, or several of which any matches.
FilterValue = str | Sequence[str]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "dense", "sparse")
# Filter name -> payload field (exact match; on a list field, any element).
FILTERS = {"type": "type", "service": "services", "alertname": "alertnames", "severity": "severity", "source": "source"}
_META_MODEL = "embedder_model_id"
_META_DIMENSION = "embedder_dimension"
_PREFETCH_FACTOR = 4
_PREFETCH_MIN = 20
# Query vectors kept: searches of one question (the knowledge agent runs several at once) embed it once.
_RECENT_QUERIES = 64
_SCROLL_PAGE = 256
_INDEX_SCROLL_PAGE = 2048
_UPSERT_BATCH = 128


class DocumentStore:
    """The knowledge base's chunks in Qdrant. Call `open()` once before anything else."""

    def __init__(
        self, client: AsyncQdrantClient, embedder: Embedder, collection: str = DEFAULT_COLLECTION, *,
        timeout_s: float = 10.0, lexical_index: bool | LexicalIndex = False,
    ) -> None:  # fmt: skip
        """`lexical_index`: True (or an index to fill) for a client in local path mode, where this store is the
        collection's only writer; never for a server, whose collection other processes write too."""
        self._client = client
        self._embedder = embedder
        self._collection = collection
        self._timeout_s = timeout_s
        self._index: LexicalIndex | None = None
        if isinstance(lexical_index, LexicalIndex) or lexical_index:
            self._index = lexical_index if isinstance(lexical_index, LexicalIndex) else LexicalIndex(FILTERS.values())
        self._index_ready = False
        # Held while the index is (re)built and around each write and its mirroring, so that no write slips
        # between the scroll that builds the index and the index's use.
        self._index_lock = asyncio.Lock()
        self._query_vectors: dict[str, asyncio.Future[list[list[float]]]] = {}

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
            if self._index is not None:
                async with self._index_lock:
                    await self._load_index()
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
        # Every vector first: an embedder that fails now leaves the old collection as it was.
        points = [point for start in range(0, len(chunks), _UPSERT_BATCH)
                  for point in await self._points(chunks[start : start + _UPSERT_BATCH])]  # fmt: skip
        await self._call(self._client.delete_collection(self._collection))
        await self._create()
        for start in range(0, len(points), _UPSERT_BATCH):
            await self._store(points[start : start + _UPSERT_BATCH])
        return len(chunks)

    async def documents(self) -> dict[str, str]:
        """Every stored document: source -> content hash."""
        known: dict[str, str] = {}
        first = models.Filter(must=[models.FieldCondition(key="index", match=models.MatchValue(value=0))])
        async for _, payload in self._payloads(first, fields=["source", "content_hash"]):
            known[str(payload["source"])] = str(payload["content_hash"])
        return known

    async def content_hashes(self, sources: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of `sources` that is stored: a lookup of their first chunks by id, not a
        scan of the collection."""
        if not sources:
            return {}
        ids = [chunk_id(source, 0) for source in sources]
        records = await self._call(
            self._client.retrieve(self._collection, ids, with_payload=["source", "content_hash"])
        )
        return {str(r.payload["source"]): str(r.payload["content_hash"]) for r in records if r.payload}

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
        if self._index is not None:
            # The index knows the documents' points: deleting them by id spares local mode a scan of every payload.
            ids = (await self._ready_index()).ids_where("source", sources)
            if ids:
                selector = models.PointIdsList(points=ids)  # type: ignore[arg-type]
                await self._write(lambda: self._client.delete(self._collection, points_selector=selector, wait=True),
                                  lambda index: index.remove(ids))  # fmt: skip
            return
        selector = models.FilterSelector(
            filter=models.Filter(must=[models.FieldCondition(key="source", match=models.MatchAny(any=list(sources)))])
        )
        await self._call(self._client.delete(self._collection, points_selector=selector, wait=True))

    async def count(self, filters: Mapping[str, FilterValue] | None = None) -> int:
        result = await self._call(self._client.count(self._collection, count_filter=_filter(filters), exact=True))
        return int(result.count)

    async def search(
        self, query: str, k: int = 5, *, mode: SearchMode = "hybrid", filters: Mapping[str, FilterValue] | None = None
    ) -> list[DocumentHit]:
        """The `k` best chunks for `query`, best first. An unknown filter or mode raises ValueError."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; known: {', '.join(SEARCH_MODES)}")
        where = _filter(filters)
        sparse = _sparse(query_terms(query))
        if self._index is not None and mode != "dense":
            return await self._search_indexed(query, k, mode, filters or {}, where, sparse)
        dense: list[float] | None = None
        if mode != "sparse":
            dense = await self._query_vector(query)
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
        return [hit_of(str(p.id), float(p.score), dict(p.payload or {}), terms) for p in response.points]

    async def _query_vector(self, query: str) -> list[float]:
        """The dense vector of `query`, embedded once for concurrent and recent searches of the same text (the
        embedder is this store's for its lifetime); a failed embedding is not kept."""
        vector = self._query_vectors.get(query)
        if vector is None or (vector.done() and (vector.cancelled() or vector.exception() is not None)):
            vector = asyncio.ensure_future(self._call(self._embedder.embed([query])))
            self._query_vectors[query] = vector
            while len(self._query_vectors) > _RECENT_QUERIES:
                self._query_vectors.pop(next(iter(self._query_vectors)))
        [dense] = await asyncio.shield(vector)
        return dense

    async def _search_indexed(
        self, query: str, k: int, mode: SearchMode, filters: Mapping[str, FilterValue], where: models.Filter | None,
        sparse: models.SparseVector,
    ) -> list[DocumentHit]:
        """`search` with the lexical index: what Qdrant answers to the same request, its sparse side done here."""
        if mode == "sparse" and not sparse.indices:
            return []
        index = await self._ready_index()
        fields = {FILTERS[name]: value for name, value in filters.items()}
        if mode == "sparse":
            ranked = index.search(sparse.indices, sparse.values, k, fields)
        else:
            dense = await self._query_vector(query)
            depth = max(k * _PREFETCH_FACTOR, _PREFETCH_MIN)
            response = await self._call(
                self._client.query_points(self._collection, query=dense, using=DENSE, query_filter=where,
                                          limit=depth, with_payload=False)
            )  # fmt: skip
            rankings = [[str(point.id) for point in response.points]]
            if sparse.indices:
                rankings.append([pid for pid, _ in index.search(sparse.indices, sparse.values, depth, fields)])
            ranked = reciprocal_rank_fusion(rankings, k)
        if not ranked:
            return []
        records = await self._call(self._client.retrieve(self._collection, [pid for pid, _ in ranked]))
        payloads = {str(record.id): dict(record.payload or {}) for record in records}
        terms = set(tokens(query))
        return [hit_of(pid, score, payloads[pid], terms) for pid, score in ranked if pid in payloads]

    async def _upsert(self, chunks: list[DocumentChunk]) -> None:
        if chunks:
            await self._store(await self._points(chunks))

    async def _points(self, chunks: Sequence[DocumentChunk]) -> list[models.PointStruct]:
        # No store timeout here: the embedder bounds each of its batches itself (a bulk load takes a while).
        vectors = await self._embedder.embed([c.embedding_text() for c in chunks])
        return [
            models.PointStruct(
                id=chunk.chunk_id,
                vector={DENSE: vector, LEXICAL: _sparse(document_terms(chunk.embedding_text()))},
                payload=chunk.payload(),
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]

    async def _store(self, points: list[models.PointStruct]) -> None:

        def mirror(index: LexicalIndex) -> None:
            for point in points:
                lexical: models.SparseVector = point.vector[LEXICAL]  # type: ignore[index]
                index.upsert(str(point.id), lexical.indices, lexical.values, point.payload or {})

        await self._write(lambda: self._client.upsert(self._collection, points=points, wait=True), mirror)

    async def _write(self, write: Callable[[], Awaitable[Any]], mirror: Callable[[LexicalIndex], None]) -> None:
        """A write to Qdrant, then the same change to the lexical index (which a failed write leaves to rebuild:
        the write may have happened all the same)."""
        if self._index is None:
            await self._call(write())
            return
        async with self._index_lock:
            try:
                await self._call(write())
            except BaseException:
                self._index_ready = False
                raise
            if self._index_ready:
                mirror(self._index)

    async def _ready_index(self) -> LexicalIndex:
        assert self._index is not None
        if not self._index_ready:
            async with self._index_lock:
                if not self._index_ready:
                    await self._load_index()
        return self._index

    async def _load_index(self) -> None:
        """(Re)build the lexical index from the collection's points (under `_index_lock`)."""
        assert self._index is not None
        started = time.perf_counter()
        self._index_ready = False
        self._index.clear()
        fields = list(self._index.fields)
        async for point in self._scroll(fields=fields, vectors=[LEXICAL], page=_INDEX_SCROLL_PAGE):
            lexical = (point.vector or {}).get(LEXICAL)  # type: ignore[union-attr]
            if lexical is not None:  # a point without the vector is no part of Qdrant's sparse corpus either
                self._index.upsert(str(point.id), lexical.indices, lexical.values, point.payload or {})
        self._index.compact()
        self._index_ready = True
        log.info("lexical index built", extra={"collection": self._collection, "points": len(self._index),
                                               "seconds": round(time.perf_counter() - started, 3)})  # fmt: skip

    async def _payloads(
        self, where: models.Filter | None = None, fields: list[str] | bool = True
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        async for point in self._scroll(where, fields=fields):
            yield str(point.id), dict(point.payload or {})

    async def _scroll(
        self, where: models.Filter | None = None, *, fields: list[str] | bool = True, vectors: list[str] | bool = False,
        page: int = _SCROLL_PAGE,
    ) -> AsyncIterator[models.Record]:  # fmt: skip
        offset: Any = None
        while True:
            points, offset = await self._call(
                self._client.scroll(
                    self._collection, scroll_filter=where, limit=page, offset=offset,
                    with_payload=fields, with_vectors=vectors,
                )
            )  # fmt: skip
            for point in points:
                yield point
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
            if self._index is not None:
                self._index.clear()
                self._index_ready = True
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
            keyword, integer = models.PayloadSchemaType.KEYWORD, models.PayloadSchemaType.INTEGER
            for field in (*FILTERS.values(), "content_hash"):
                await self._call(self._client.create_payload_index(self._collection, field, field_schema=keyword))
            await self._call(self._client.create_payload_index(self._collection, "index", field_schema=integer))

    async def _call(self, awaitable: Any) -> Any:
        async with asyncio.timeout(self._timeout_s):
            return await awaitable


def _filter(filters: Mapping[str, FilterValue] | None) -> models.Filter | None:
    conditions: list[models.Condition] = []
    for name, value in (filters or {}).items():
        if name not in FILTERS:
            raise ValueError(f"cannot filter the knowledge base on {name!r}; filterable: {', '.join(FILTERS)}")
        match = models.MatchValue(value=value) if isinstance(value, str) else models.MatchAny(any=list(value))
        conditions.append(models.FieldCondition(key=FILTERS[name], match=match))
    return models.Filter(must=conditions) if conditions else None


def _sparse(terms: SparseTerms) -> models.SparseVector:
    return models.SparseVector(indices=terms.indices, values=terms.values)


def _chunk_of(point_id: str, payload: Mapping[str, Any]) -> DocumentChunk:
    """The chunk a stored point was made from (its payload is every field of the chunk but the id)."""
    fields = {name: payload.get(name) for name in _CHUNK_FIELDS}
    for name in ("alertnames", "services"):
        fields[name] = tuple(fields.get(name) or ())
    return DocumentChunk(chunk_id=point_id, **fields)


_CHUNK_FIELDS = [f.name for f in dataclasses.fields(DocumentChunk) if f.name != "chunk_id"]
