"""The lexical index against Qdrant's local mode (in memory) as the reference: the same scores, ranking and filters
for sparse queries with the IDF modifier, through upserts, replacements, removals and compactions; Qdrant's RRF."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.hybrid.fusion import reciprocal_rank_fusion as qdrant_rrf
from qdrant_client.local.local_collection import LocalCollection

from knowledge import lexical_index
from knowledge.lexical_index import RRF_K, LexicalIndex, idf, reciprocal_rank_fusion

FIELDS = ("type", "services", "source")
VOCABULARY = 60
COLLECTION = "lexical"


@pytest.fixture
def qdrant() -> Iterator[QdrantClient]:
    client = QdrantClient(location=":memory:")
    client.create_collection(
        COLLECTION, vectors_config={},
        sparse_vectors_config={"lexical": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )  # fmt: skip
    yield client
    client.close()


class Mirror:
    """One collection written to Qdrant and to the index alike."""

    def __init__(self, qdrant: QdrantClient, seed: int) -> None:
        self.qdrant = qdrant
        self.index = LexicalIndex(FIELDS)
        self.rng = random.Random(seed)

    def point_id(self, number: int) -> str:
        return f"00000000-0000-0000-0000-{number:012d}"

    def upsert(self, number: int, **payload: Any) -> None:
        terms = sorted(self.rng.sample(range(VOCABULARY), self.rng.randint(1, 12)))
        values = [self.rng.uniform(0.2, 2.1) for _ in terms]
        payload = {"type": self.rng.choice(["runbook", "postmortem"]), "source": f"doc-{number % 7}",
                   "services": self.rng.sample(["api", "db", "cache"], self.rng.randint(0, 2)), **payload}  # fmt: skip
        vector = models.SparseVector(indices=terms, values=values)
        point = models.PointStruct(id=self.point_id(number), vector={"lexical": vector}, payload=payload)
        self.qdrant.upsert(COLLECTION, points=[point])
        self.index.upsert(self.point_id(number), terms, values, payload)

    def remove(self, numbers: list[int]) -> None:
        ids = [self.point_id(n) for n in numbers]
        self.qdrant.delete(COLLECTION, points_selector=models.PointIdsList(points=ids))  # type: ignore[arg-type]
        self.index.remove(ids)

    def query(self) -> tuple[list[int], list[float]]:
        terms = sorted(self.rng.sample(range(VOCABULARY), self.rng.randint(1, 5)))
        return terms, [self.rng.choice([1.0, 2.0]) for _ in terms]

    def assert_same(self, queries: int = 25, limit: int = 10, where: dict[str, str] | None = None) -> None:
        conditions = [models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in (where or {}).items()]
        for _ in range(queries):
            terms, values = self.query()
            theirs = self.qdrant.query_points(
                COLLECTION, query=models.SparseVector(indices=terms, values=values), using="lexical", limit=limit,
                query_filter=models.Filter(must=conditions) if conditions else None,  # type: ignore[arg-type]
            ).points  # fmt: skip
            ours = self.index.search(terms, values, limit, where)
            assert ours == [(str(p.id), p.score) for p in theirs], (terms, values, where)


def test_idf_is_qdrants() -> None:
    for documents, frequency in [(1, 1), (10, 0), (10, 3), (10_000, 9_999), (10_000, 17)]:
        assert idf(frequency, documents) == LocalCollection._compute_idf(frequency, documents)


def test_rrf_is_qdrants() -> None:
    rng = random.Random(7)
    for _ in range(50):
        pool = [f"p{i}" for i in range(30)]
        rankings = [rng.sample(pool, rng.randint(0, 20)) for _ in range(rng.randint(1, 3))]
        responses = [[models.ScoredPoint(id=pid, version=0, score=0.0) for pid in r] for r in rankings]
        limit = rng.randint(1, 25)
        expected = [(str(p.id), p.score) for p in qdrant_rrf(responses, limit=limit)]
        assert reciprocal_rank_fusion(rankings, limit) == expected
    assert RRF_K == 2 and reciprocal_rank_fusion([["a", "b"], ["b"]], 5) == [("b", 1 / 3 + 1 / 2), ("a", 1 / 2)]


def test_scores_and_rankings_equal_qdrants(qdrant: QdrantClient) -> None:
    mirror = Mirror(qdrant, seed=1)
    for number in range(120):
        mirror.upsert(number)
    mirror.assert_same(limit=10)
    mirror.assert_same(limit=500)  # every point sharing a term, and none other
    mirror.index.compact()
    mirror.assert_same(limit=10)


@pytest.mark.parametrize("where", [{"type": "runbook"}, {"services": "db"}, {"source": "doc-3", "services": "api"},
                                   {"type": "incident"}, {"services": "nowhere"}])  # fmt: skip
def test_filters_equal_qdrants(qdrant: QdrantClient, where: dict[str, str]) -> None:
    mirror = Mirror(qdrant, seed=2)
    for number in range(80):
        mirror.upsert(number)
    mirror.index.compact()
    mirror.upsert(80, type="incident", services=["db"])
    mirror.assert_same(where=where, limit=20)


def test_updates_and_removals_keep_it_equal(qdrant: QdrantClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical_index, "COMPACT_MIN", 16)
    mirror = Mirror(qdrant, seed=3)
    for number in range(60):
        mirror.upsert(number)
    mirror.index.compact()
    for round_ in range(6):  # replacements and removals in the compacted block and among the fresh points
        for number in mirror.rng.sample(range(60 + round_ * 5), 8):
            mirror.upsert(number)
        mirror.remove(mirror.rng.sample(range(60 + round_ * 5), 4))
        for number in range(60 + round_ * 5, 65 + round_ * 5):
            mirror.upsert(number)
        mirror.assert_same(queries=10, limit=15)
        mirror.assert_same(queries=5, limit=15, where={"services": "cache"})
    assert len(mirror.index) == qdrant.count(COLLECTION).count


def test_points_without_a_shared_term_are_not_results() -> None:
    index = LexicalIndex(FIELDS)
    index.upsert("a", [5, 1], [1.0, 0.5], {"type": "runbook"})
    index.upsert("b", [2], [1.0], {})
    assert [pid for pid, _ in index.search([1], [1.0], 10)] == ["a"]
    assert index.search([99], [1.0], 10) == [] and index.search([], [], 10) == []
    assert index.search([1], [1.0], 0) == []
    [(_, score)] = index.search([1], [1.0], 10)
    assert score == float(np.float32(0.5 * idf(1, 2)))  # Qdrant's local mode rounds the dot product to float32


def test_replacing_and_removing_points() -> None:
    index = LexicalIndex(FIELDS)
    index.upsert("a", [1, 2], [1.0, 1.0], {"source": "x.md", "services": ["api", "db"]})
    index.upsert("b", [2], [1.0], {"source": "y.md", "services": "db"})
    assert len(index) == 2 and "a" in index and "c" not in index
    assert index.ids_where("source", ["x.md", "y.md"]) == ["a", "b"]
    assert index.ids_where("services", ["db"]) == ["a", "b"] and index.ids_where("services", []) == []
    index.upsert("a", [3], [1.0], {"source": "z.md"})  # replaced: its old terms and fields are gone
    assert index.ids_where("source", ["x.md"]) == [] and index.ids_where("services", ["api"]) == []
    assert index.search([1], [1.0], 10) == [] and [p for p, _ in index.search([3], [1.0], 10)] == ["a"]
    index.remove(["a", "unknown"])
    assert len(index) == 1 and index.search([3], [1.0], 10) == []
    index.compact()
    assert [p for p, _ in index.search([2], [1.0], 10)] == ["b"]
    index.clear()
    assert len(index) == 0 and index.search([2], [1.0], 10) == []


def test_filter_values_match_strings_only() -> None:
    index = LexicalIndex(FIELDS)
    index.upsert("a", [1], [1.0], {"type": "runbook", "services": ["api", 3, None], "source": 7})
    assert index.search([1], [1.0], 5, {"services": "api"})[0][0] == "a"
    assert index.search([1], [1.0], 5, {"source": "7"}) == []
    assert index.search([1], [1.0], 5, {"services": 3}) == []  # type: ignore[dict-item]


@pytest.mark.parametrize(("indices", "values"), [([1, 1], [1.0, 2.0]), ([1, 2], [1.0])])
def test_malformed_vectors_are_refused(indices: list[int], values: list[float]) -> None:
    with pytest.raises(ValueError, match="sparse vector"):
        LexicalIndex(FIELDS).upsert("a", indices, values, {})


def test_it_compacts_once_enough_has_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical_index, "COMPACT_MIN", 4)
    index = LexicalIndex(FIELDS)
    compactions: list[int] = []
    original = LexicalIndex.compact
    monkeypatch.setattr(LexicalIndex, "compact", lambda self: (compactions.append(len(self)), original(self))[1])
    for number in range(4):
        index.upsert(f"p{number}", [1], [1.0 + number], {})
    assert [p for p, _ in index.search([1], [1.0], 2)] == ["p3", "p2"] and compactions == []
    index.upsert("p4", [1], [9.0], {})  # five pending points: more than COMPACT_MIN
    assert compactions == [5]
    index.remove(["p0", "p1", "p2"])
    assert compactions == [5]
    index.upsert("p1", [1], [0.5], {})  # dead points count as pending changes too
    assert [p for p, _ in index.search([1], [1.0], 9)] == ["p4", "p3", "p1"] and compactions == [5]
    index.remove(["p3"])
    assert [p for p, _ in index.search([1], [1.0], 9)] == ["p4", "p1"] and compactions == [5, 2]
