"""The document store on a real local Qdrant (path mode), with the hashing embedder: the collection and its metadata,
idempotent replacement, removal, filters, the three search modes, hybrid as the RRF of the dense and sparse
rankings, re-embedding when the embedder changes, and the lexical index answering exactly as Qdrant does.

Most tests run twice: with Qdrant's own sparse search ("qdrant") and with the store's lexical index ("index").
Comparisons with Qdrant use a second store without the index over the same client and collection.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from qdrant_client import AsyncQdrantClient, models

from knowledge import lexical_index
from knowledge.document_chunks import chunk_document
from knowledge.document_store import FILTERS, DocumentHit, DocumentStore
from knowledge.knowledge_base import KnowledgeBase
from knowledge.lexical_index import reciprocal_rank_fusion
from knowledge.markdown_documents import SourceDocument, parse_document
from knowledge.retrieval_quality import corpus_documents, load_labelled
from knowledge.text_vectors import HASHING_MODEL_ID, HashingEmbedder

pytestmark = pytest.mark.integration

COLLECTION = "docs"
DIMENSION = 64
SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "vos", "pe", "dra", "gil", "nu", "sar", "bex", "qui", "zo")
ALERTS = ("DiskFull", "HighLatency", "PodCrashLooping", "CertExpiring")
TYPES = ("runbook", "postmortem", "incident")


def _words(rng: random.Random, count: int) -> list[str]:
    found: dict[str, None] = {}
    while len(found) < count:
        found["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))] = None
    return list(found)


def synthetic_corpus(documents: int = 48, seed: int = 5) -> tuple[list[SourceDocument], list[str]]:
    """Single-chunk documents over an invented vocabulary, with types, alerts, services and severities spread over
    them; and the vocabulary of their bodies. Each body word occurs once in its document and the bodies' lengths
    differ, so that BM25 scores do not tie (titles draw on words of their own, never queried)."""
    rng = random.Random(seed)
    words = _words(rng, 190)
    vocabulary, title_words = words[:150], words[150:]
    docs = []
    for number in range(documents):
        body = " ".join(rng.sample(vocabulary, 12 + 2 * number))
        title = " ".join(rng.sample(title_words, 3))
        front = (f"title: {title}\ntype: {TYPES[number % 3]}\nalerts: [{ALERTS[number % 4]}]\n"
                 f"services: [svc-{number % 5}]\nseverity: {('critical', 'warning')[number % 2]}\n")  # fmt: skip
        docs.append(parse_document(f"kb/doc-{number:02d}.md", f"---\n{front}---\n# {title}\n\n{body}\n"))
    return docs, vocabulary


def synthetic_queries(vocabulary: Sequence[str], count: int = 30, seed: int = 9) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(vocabulary, rng.randint(1, 4))) for _ in range(count)]


async def store_documents(store: DocumentStore, docs: Sequence[SourceDocument]) -> None:
    for doc in docs:
        await store.replace_document(doc.source, chunk_document(doc), existing=False)


def ranking(hits: Sequence[DocumentHit]) -> list[tuple[str, float]]:
    return [(hit.chunk_id, hit.score) for hit in hits]


@pytest.fixture
def client(local_qdrant: AsyncQdrantClient) -> AsyncQdrantClient:
    return local_qdrant


@pytest.fixture(params=[False, True], ids=["qdrant", "index"])
def indexed(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.fixture
async def store(client: AsyncQdrantClient, indexed: bool) -> DocumentStore:
    opened = DocumentStore(client, HashingEmbedder(DIMENSION), COLLECTION, lexical_index=indexed)
    assert await opened.open() == 0
    return opened


@pytest.fixture
async def corpus(store: DocumentStore) -> tuple[list[SourceDocument], list[str]]:
    docs, vocabulary = synthetic_corpus()
    await store_documents(store, docs)
    return docs, vocabulary


def qdrant_store(store: DocumentStore, client: AsyncQdrantClient) -> DocumentStore:
    """A reader of the same collection that leaves every search to Qdrant (not opened: nothing to build)."""
    return DocumentStore(client, store.embedder, store.collection)


async def test_open_creates_the_collection_with_the_embedders_metadata(
    store: DocumentStore, client: AsyncQdrantClient
) -> None:
    info = await client.get_collection(COLLECTION)
    assert info.config.metadata == {"embedder_model_id": HASHING_MODEL_ID, "embedder_dimension": DIMENSION}
    dense = info.config.params.vectors["dense"]  # type: ignore[index]
    assert (dense.size, dense.distance) == (DIMENSION, models.Distance.COSINE)
    assert info.config.params.sparse_vectors["lexical"].modifier == models.Modifier.IDF  # type: ignore[index]
    assert await store.count() == 0 and await store.search("anything at all", 5) == []
    assert await store.open() == 0  # opening again changes nothing


async def test_replacing_a_document_is_idempotent(store: DocumentStore) -> None:
    long = parse_document("kb/disk.md", "# Disk full\n\n" + "\n\n".join(f"## Step {i}\n\n" + "clean the logs " * 40
                                                                         for i in range(4)))  # fmt: skip
    chunks = chunk_document(long)
    assert len(chunks) > 2
    assert await store.replace_document(long.source, chunks, existing=False) == len(chunks)
    first = ranking(await store.search("clean the logs", 10))
    assert await store.replace_document(long.source, chunks) == len(chunks)
    assert await store.count() == len(chunks) and ranking(await store.search("clean the logs", 10)) == first
    assert await store.documents() == {"kb/disk.md": long.content_hash}
    short = parse_document("kb/disk.md", "# Disk full\n\nDelete rotated logs under /var/log.\n")
    await store.replace_document(short.source, chunk_document(short))
    assert await store.count() == 1 and await store.documents() == {"kb/disk.md": short.content_hash}
    assert await store.search("clean", 10, mode="sparse") == []
    with pytest.raises(ValueError, match="every chunk must belong"):
        await store.replace_document("kb/other.md", chunk_document(short))


async def test_removing_documents(store: DocumentStore, corpus: tuple[list[SourceDocument], list[str]]) -> None:
    docs, _ = corpus
    gone, kept = docs[3], docs[4]
    await store.remove_documents([gone.source, "kb/never-stored.md"])
    await store.remove_documents([])
    assert await store.count() == len(docs) - 1
    assert gone.source not in await store.documents() and kept.source in await store.documents()
    for mode in ("hybrid", "dense", "sparse"):
        hits = await store.search(gone.title, 50, mode=mode)  # type: ignore[arg-type]
        assert gone.source not in {hit.source for hit in hits}
    assert (await store.search(kept.title, 1, mode="sparse"))[0].source == kept.source


@pytest.mark.parametrize(("name", "value"), [("type", "postmortem"), ("service", "svc-2"), ("alertname", "DiskFull"),
                                             ("severity", "critical"), ("source", "kb/doc-07.md"),
                                             ("service", ("svc-1", "svc-2")), ("source", ["kb/doc-03.md"])])  # fmt: skip
async def test_filters_narrow_every_mode(
    store: DocumentStore, corpus: tuple[list[SourceDocument], list[str]], name: str, value: str | Sequence[str]
) -> None:
    docs, vocabulary = corpus
    field = FILTERS[name]
    wanted = {doc.source for doc in docs if _holds(getattr(doc, field), value)}
    assert wanted and len(wanted) < len(docs)
    assert await store.count({name: value}) == len(wanted)
    for mode in ("hybrid", "dense", "sparse"):
        hits = await store.search(" ".join(vocabulary), 100, mode=mode, filters={name: value})  # type: ignore[arg-type]
        assert {hit.source for hit in hits} == wanted, mode
        assert all(_holds(hit.payload[field], value) for hit in hits)


def _holds(held: object, value: str | Sequence[str]) -> bool:
    """Whether a payload value matches a filter value (several values: any of them)."""
    if not isinstance(value, str):
        return any(_holds(held, one) for one in value)
    return value in held if isinstance(held, list | tuple) else held == value


async def test_unknown_filters_and_modes_are_refused(store: DocumentStore) -> None:
    with pytest.raises(ValueError, match="cannot filter the knowledge base on 'owner'"):
        await store.search("disk", filters={"owner": "sre"})
    with pytest.raises(ValueError, match="unknown search mode 'fuzzy'"):
        await store.search("disk", mode="fuzzy")  # type: ignore[arg-type]


async def test_the_three_modes(store: DocumentStore, corpus: tuple[list[SourceDocument], list[str]]) -> None:
    docs, _ = corpus
    target = docs[10]
    for mode in ("hybrid", "dense", "sparse"):
        hits = await store.search(target.title, 5, mode=mode)  # type: ignore[arg-type]
        assert len(hits) == 5 and hits[0].source == target.source, mode
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].title == target.title and hits[0].type == target.type and hits[0].snippet
        assert "text" not in hits[0].payload and hits[0].payload["content_hash"] == target.content_hash
    dense = await store.search(target.title, 5, mode="dense")
    assert all(-1.0 <= h.score <= 1.0 + 1e-6 for h in dense)
    # Without a term of the corpus, sparse search has nothing to match; dense still ranks; hybrid is dense alone.
    assert await store.search("the of and", 5, mode="sparse") == []  # stop words only: no terms at all
    assert await store.search("xyzzy plugh", 5, mode="sparse") == []
    only_dense = await store.search("xyzzy plugh", 5, mode="dense")
    hybrid = await store.search("xyzzy plugh", 5, mode="hybrid")
    assert [h.chunk_id for h in hybrid] == [h.chunk_id for h in only_dense]
    assert [h.score for h in hybrid] == [1 / (rank + 2) for rank in range(5)]


async def test_hybrid_is_the_rrf_of_the_dense_and_sparse_rankings(
    store: DocumentStore, corpus: tuple[list[SourceDocument], list[str]]
) -> None:
    _, vocabulary = corpus
    k, depth = 5, 20  # the store prefetches max(4k, 20) of each
    for filters in (None, {"type": "runbook"}):
        for query in synthetic_queries(vocabulary, 15):
            dense = await store.search(query, depth, mode="dense", filters=filters)
            sparse = await store.search(query, depth, mode="sparse", filters=filters)
            expected = reciprocal_rank_fusion([[h.chunk_id for h in dense], [h.chunk_id for h in sparse]], k)
            assert ranking(await store.search(query, k, mode="hybrid", filters=filters)) == expected, query


async def test_another_embedder_re_embeds_the_collection(
    store: DocumentStore, corpus: tuple[list[SourceDocument], list[str]], client: AsyncQdrantClient, indexed: bool
) -> None:
    docs, vocabulary = corpus
    before = await store.search(vocabulary[0], 5, mode="sparse")
    wider = DocumentStore(client, HashingEmbedder(DIMENSION * 2), COLLECTION, lexical_index=indexed)
    assert await wider.open() == len(docs)
    info = await client.get_collection(COLLECTION)
    assert info.config.metadata == {"embedder_model_id": HASHING_MODEL_ID, "embedder_dimension": DIMENSION * 2}
    assert info.config.params.vectors["dense"].size == DIMENSION * 2  # type: ignore[index]
    assert await wider.count() == len(docs) and await wider.documents() == {d.source: d.content_hash for d in docs}
    assert ranking(await wider.search(vocabulary[0], 5, mode="sparse")) == ranking(before)
    [hit] = await wider.search(docs[6].title, 1, mode="dense")
    assert hit.source == docs[6].source
    assert await wider.open() == 0  # now recorded: nothing to do
    for mode in ("hybrid", "sparse"):
        for query in synthetic_queries(vocabulary, 8):
            theirs = await qdrant_store(wider, client).search(query, 8, mode=mode)  # type: ignore[arg-type]
            assert ranking(await wider.search(query, 8, mode=mode)) == ranking(theirs)  # type: ignore[arg-type]


class FailingEmbedder(HashingEmbedder):
    """Another model, which breaks halfway through a re-embedding."""

    def __init__(self, dimension: int, fail_after: int) -> None:
        super().__init__(dimension)
        object.__setattr__(self, "_left", fail_after)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._left <= 0:  # type: ignore[attr-defined]
            raise RuntimeError("the embedding server went away")
        object.__setattr__(self, "_left", self._left - 1)  # type: ignore[attr-defined]
        return await super().embed(texts)


async def test_a_re_embedding_that_fails_leaves_the_collection_as_it_was(
    store: DocumentStore, corpus: tuple[list[SourceDocument], list[str]], client: AsyncQdrantClient
) -> None:
    docs, vocabulary = corpus
    before, stored = ranking(await store.search(vocabulary[0], 5, mode="sparse")), await store.count()
    broken = DocumentStore(client, FailingEmbedder(DIMENSION * 2, fail_after=0), COLLECTION)
    with pytest.raises(RuntimeError, match="went away"):
        await broken.open()
    info = await client.get_collection(COLLECTION)
    assert info.config.metadata == {"embedder_model_id": HASHING_MODEL_ID, "embedder_dimension": DIMENSION}
    assert stored > 0 and await store.count() == stored
    assert await store.documents() == {d.source: d.content_hash for d in docs}
    assert ranking(await store.search(vocabulary[0], 5, mode="sparse")) == before


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting the texts it embeds (failing the first `fail` calls)."""

    def __init__(self, dimension: int, fail: int = 0) -> None:
        super().__init__(dimension)
        object.__setattr__(self, "embedded", [])
        object.__setattr__(self, "_fail", fail)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.embedded.extend(texts)  # type: ignore[attr-defined]
        if self._fail > 0:  # type: ignore[attr-defined]
            object.__setattr__(self, "_fail", self._fail - 1)  # type: ignore[attr-defined]
            raise RuntimeError("the embedding server went away")
        return await super().embed(texts)


async def test_searches_of_one_question_embed_it_once(
    client: AsyncQdrantClient, indexed: bool, corpus: tuple[list[SourceDocument], list[str]]
) -> None:
    embedder = CountingEmbedder(DIMENSION)
    searching = DocumentStore(client, embedder, COLLECTION, lexical_index=indexed)
    await searching.open()
    query = " ".join(corpus[1][:3])
    async with asyncio.TaskGroup() as group:  # as the knowledge agent asks for runbooks and postmortems at once
        runbooks = group.create_task(searching.search(query, 5, filters={"type": "runbook"}))
        any_type = group.create_task(searching.search(query, 5))
    again = await searching.search(query, 5, mode="dense")
    assert embedder.embedded.count(query) == 1  # type: ignore[attr-defined]
    assert runbooks.result() is not None and any_type.result() and again


async def test_a_failed_query_embedding_is_not_kept(client: AsyncQdrantClient, corpus: object) -> None:
    embedder = CountingEmbedder(DIMENSION, fail=1)
    searching = DocumentStore(client, embedder, COLLECTION)
    await searching.open()
    with pytest.raises(RuntimeError, match="went away"):
        await searching.search("disk full", 5, mode="dense")
    assert await searching.search("disk full", 5, mode="dense") is not None
    assert embedder.embedded.count("disk full") == 2  # type: ignore[attr-defined]


# --- the lexical index against Qdrant's own search ----------------------------------------------------------------


async def assert_answers_like_qdrant(
    ours: DocumentStore, theirs: DocumentStore, queries: Sequence[str], k: int = 8
) -> None:
    for filters in (None, {"type": "postmortem"}, {"service": "svc-1"}, {"alertname": "HighLatency",
                                                                         "severity": "critical"}):  # fmt: skip
        for query in queries:
            reference = await theirs.search(query, max(4 * k, 20), mode="sparse", filters=filters)
            scores = [h.score for h in reference]
            assert len(set(scores)) == len(scores), f"the corpus has tied scores for {query!r}: change its seed"
            for mode in ("sparse", "hybrid"):
                expected = await theirs.search(query, k, mode=mode, filters=filters)  # type: ignore[arg-type]
                found = await ours.search(query, k, mode=mode, filters=filters)  # type: ignore[arg-type]
                assert found == expected, (mode, filters, query)  # ids, order, scores, payloads, snippets


async def test_the_lexical_index_answers_as_qdrant_does(
    client: AsyncQdrantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexical_index, "COMPACT_MIN", 16)  # compactions between the writes, and fresh points too
    ours = DocumentStore(client, HashingEmbedder(DIMENSION), COLLECTION, lexical_index=True)
    await ours.open()
    theirs = qdrant_store(ours, client)
    docs, vocabulary = synthetic_corpus(documents=60)
    await store_documents(ours, docs[:40])
    queries = synthetic_queries(vocabulary)
    await assert_answers_like_qdrant(ours, theirs, queries)
    # Writes after the index was built: new documents, replaced ones, removed ones.
    await store_documents(ours, docs[40:])
    changed, _ = synthetic_corpus(documents=60, seed=6)
    for doc, replacement in zip(docs[5:15], changed[5:15], strict=True):
        moved = parse_document(doc.source, f"# {replacement.title}\n\n{replacement.body}")
        await ours.replace_document(doc.source, chunk_document(moved))
    await ours.remove_documents([doc.source for doc in docs[20:26]])
    await assert_answers_like_qdrant(ours, theirs, queries)
    # A store opened on the existing collection builds its index from it.
    reopened = DocumentStore(client, HashingEmbedder(DIMENSION), COLLECTION, lexical_index=True)
    assert await reopened.open() == 0
    await assert_answers_like_qdrant(reopened, theirs, queries)


async def test_on_the_eval_corpus_sparse_scores_equal_qdrants(client: AsyncQdrantClient) -> None:
    """Real documents: the same scores in the same order, except that equal scores may come in another order."""
    ours = DocumentStore(client, HashingEmbedder(DIMENSION), COLLECTION, lexical_index=True)
    await ours.open()
    report = await KnowledgeBase(ours).ingest(corpus_documents())
    assert report.count("failed") == 0
    theirs = qdrant_store(ours, client)
    for labelled in load_labelled():
        for filters in (None, {"type": "runbook"}):
            expected = await theirs.search(labelled.query, 10, mode="sparse", filters=filters)
            found = await ours.search(labelled.query, 10, mode="sparse", filters=filters)
            assert [h.score for h in found] == [h.score for h in expected], labelled.query
            by_score: dict[float, set[str]] = {}
            for hit in expected:
                by_score.setdefault(hit.score, set()).add(hit.chunk_id)
            last = expected[-1].score if expected else None
            for hit in found:
                assert hit.score == last or hit.chunk_id in by_score[hit.score], labelled.query


async def test_a_failed_write_makes_the_index_rebuild(
    client: AsyncQdrantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = DocumentStore(client, HashingEmbedder(DIMENSION), COLLECTION, lexical_index=True)
    await ours.open()
    docs, vocabulary = synthetic_corpus(documents=30)
    await store_documents(ours, docs[:20])
    real_upsert = client.upsert

    async def upsert_then_fail(*args: object, **kwargs: object) -> None:
        await real_upsert(*args, **kwargs)  # type: ignore[arg-type]
        raise TimeoutError("the answer was lost")

    monkeypatch.setattr(client, "upsert", upsert_then_fail)
    with pytest.raises(TimeoutError):
        await store_documents(ours, docs[20:])
    monkeypatch.setattr(client, "upsert", real_upsert)
    theirs = qdrant_store(ours, client)
    assert await theirs.count() == 21  # the failed write did happen: the index must learn it from Qdrant
    # The rebuild races writes: searches and writes at once, none lost between the rebuild's scroll and its use.
    queries = synthetic_queries(vocabulary, 10)
    await asyncio.gather(ours.search(queries[0], 5), store_documents(ours, docs[21:]), ours.search(queries[1], 5),
                         ours.remove_documents([docs[2].source]))  # fmt: skip
    assert await theirs.count() == 29
    await assert_answers_like_qdrant(ours, theirs, queries)
