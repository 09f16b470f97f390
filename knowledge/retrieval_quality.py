"""How well the knowledge base finds the right document: recall@k and MRR on a labelled set, per search mode.

The labelled set (`eval_corpus/labelled.yaml`, shipped with the package next to its corpus of runbooks and
postmortems) pairs a query with the file names of the documents that answer it: alerts as Alertmanager would
word them -> the runbook for that alert; an incident's text (title, alerts, hypothesis) -> the postmortems of its
similar predecessors. A query may carry `filters` (the knowledge base's search filters, e.g. `{type: postmortem}`
for the incidents, since one looks for predecessors among postmortems).

The knowledge base returns chunks; documents are what is relevant, so `document_ranking` keeps the first (best)
rank of each document key (the file name of its `source`), several chunks of one runbook counting once.

Metrics over N queries (each query's `relevant` set non-empty):
- recall@k: the mean over queries of |relevant within the first k| / min(k, |relevant|), so a perfect ranking
  scores 1.0 at every k, also when a query has more relevant documents than k;
- MRR: the mean of 1 / (rank of the first relevant document), 0 for a query whose ranking holds none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import yaml

from knowledge.document_store import SEARCH_MODES, DocumentHit, SearchMode
from knowledge.markdown_documents import SourceDocument, find_documents, read_document

if TYPE_CHECKING:
    from knowledge.knowledge_base import KnowledgeBase

log = logging.getLogger(__name__)

EVAL_CORPUS = Path(__file__).resolve().parent / "eval_corpus"
LABELLED_SET = EVAL_CORPUS / "labelled.yaml"
# Chunks asked for per query: enough that grouping them by document still leaves a ranking of ~10 documents.
SEARCH_DEPTH = 40
RANKING_DEPTH = 10


def _check(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str] | frozenset[str]]) -> None:
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} rankings but {len(relevant)} relevant sets")
    if not ranked:
        raise ValueError("no queries to measure")
    if any(not wanted for wanted in relevant):
        raise ValueError("every query needs at least one relevant document")


def recall_at(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str] | frozenset[str]], k: int) -> float:
    """Mean over queries of the relevant documents found within the first `k`, out of min(k, |relevant|)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    _check(ranked, relevant)
    total = 0.0
    for ranking, wanted in zip(ranked, relevant, strict=True):
        found = len(wanted.intersection(ranking[:k]))
        total += found / min(k, len(wanted))
    return total / len(ranked)


def reciprocal_rank(ranking: Sequence[str], wanted: set[str] | frozenset[str]) -> float:
    """1 / the 1-based rank of the first relevant document in `ranking`; 0.0 when there is none."""
    for rank, key in enumerate(ranking, start=1):
        if key in wanted:
            return 1.0 / rank
    return 0.0


def mean_reciprocal_rank(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str] | frozenset[str]]) -> float:
    """Mean over queries of the reciprocal rank of the first relevant document."""
    _check(ranked, relevant)
    return sum(reciprocal_rank(r, w) for r, w in zip(ranked, relevant, strict=True)) / len(ranked)


def document_key(source: str) -> str:
    """What a labelled set names a document by: the file name of its source ("/x/disk-full.md" -> "disk-full.md")."""
    return PurePath(source).name


def document_ranking(
    hits: Sequence[DocumentHit], key: Callable[[str], str] = document_key, depth: int = RANKING_DEPTH
) -> list[str]:
    """The documents of chunk hits (best first), each at the rank of its best chunk, at most `depth` of them."""
    ranking: list[str] = []
    for hit in hits:
        name = key(hit.source)
        if name not in ranking:
            ranking.append(name)
            if len(ranking) == depth:
                break
    return ranking


@dataclass(frozen=True)
class LabelledQuery:
    """A query and the documents (file names) that answer it."""

    query: str
    relevant: frozenset[str]
    kind: str = "alert"
    filters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryOutcome:
    """One query's document ranking in one mode, and its reciprocal rank."""

    query: LabelledQuery
    ranking: list[str]

    @property
    def reciprocal_rank(self) -> float:
        return reciprocal_rank(self.ranking, self.query.relevant)


@dataclass(frozen=True)
class QualityReport:
    """recall@1, recall@5 and MRR of one search mode over a labelled set."""

    mode: str
    queries: int
    recall_at_1: float
    recall_at_5: float
    mrr: float
    seconds: float = 0.0
    outcomes: list[QueryOutcome] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def of(cls, mode: str, outcomes: Sequence[QueryOutcome], seconds: float = 0.0) -> QualityReport:
        ranked = [o.ranking for o in outcomes]
        relevant = [o.query.relevant for o in outcomes]
        return cls(
            mode=mode, queries=len(outcomes), recall_at_1=recall_at(ranked, relevant, 1),
            recall_at_5=recall_at(ranked, relevant, 5), mrr=mean_reciprocal_rank(ranked, relevant),
            seconds=seconds, outcomes=list(outcomes),
        )  # fmt: skip

    def line(self) -> str:
        return (
            f"kb quality: mode={self.mode} queries={self.queries} recall@1={self.recall_at_1:.2f} "
            f"recall@5={self.recall_at_5:.2f} mrr={self.mrr:.2f}"
        )

    def of_kind(self, kind: str) -> QualityReport:
        """The same figures over the queries of one kind ("alert", "incident")."""
        return QualityReport.of(f"{self.mode}/{kind}", [o for o in self.outcomes if o.query.kind == kind])

    def misses(self, k: int = 1) -> list[QueryOutcome]:
        """The queries whose first relevant document is not within the first `k` (worst first)."""
        missed = [o for o in self.outcomes if not o.query.relevant.intersection(o.ranking[:k])]
        return sorted(missed, key=lambda o: o.reciprocal_rank)


def load_labelled(path: Path = LABELLED_SET) -> list[LabelledQuery]:
    """The labelled queries of a YAML file: `alerts:` and `incidents:` lists of {query, relevant[, filters]}."""
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of query kinds to lists of queries")
    queries: list[LabelledQuery] = []
    for kind_key, entries in loaded.items():
        kind = str(kind_key).removesuffix("s")
        for number, entry in enumerate(entries or [], start=1):
            queries.append(_labelled(path, f"{kind_key}[{number}]", kind, entry))
    return queries


def _labelled(path: Path, where: str, kind: str, entry: Any) -> LabelledQuery:
    if not isinstance(entry, dict) or not str(entry.get("query") or "").strip():
        raise ValueError(f"{path}: {where} needs a non-empty `query`")
    relevant = entry.get("relevant")
    if isinstance(relevant, str):
        relevant = [relevant]
    if not isinstance(relevant, list) or not relevant or not all(isinstance(r, str) for r in relevant):
        raise ValueError(f"{path}: {where} needs `relevant`: a non-empty list of file names")
    filters = entry.get("filters") or {}
    if not isinstance(filters, dict):
        raise ValueError(f"{path}: {where}: `filters` must be a mapping")
    return LabelledQuery(
        query=" ".join(str(entry["query"]).split()), relevant=frozenset(relevant), kind=kind,
        filters={str(k): str(v) for k, v in filters.items()},
    )  # fmt: skip


def corpus_documents(directory: Path = EVAL_CORPUS) -> list[SourceDocument]:
    """Every Markdown document under `directory`, parsed (sources are resolved paths)."""
    return [read_document(path) for path in find_documents([directory])]


async def evaluate_mode(
    kb: KnowledgeBase,
    queries: Sequence[LabelledQuery],
    mode: SearchMode,
    *,
    key: Callable[[str], str] = document_key,
    search_depth: int = SEARCH_DEPTH,
) -> QualityReport:
    """Run every query in `mode` and measure the document rankings."""
    started = time.perf_counter()
    outcomes = []
    for labelled in queries:
        hits = await kb.search(labelled.query, search_depth, mode=mode, filters=labelled.filters or None)
        outcomes.append(QueryOutcome(labelled, document_ranking(hits, key)))
    report = QualityReport.of(mode, outcomes, time.perf_counter() - started)
    log.info("retrieval quality measured", extra={"mode": mode, "queries": report.queries, "mrr": report.mrr})
    return report


async def evaluate(
    kb: KnowledgeBase,
    queries: Sequence[LabelledQuery],
    modes: Sequence[SearchMode] = ("sparse", "dense", "hybrid"),
    *,
    key: Callable[[str], str] = document_key,
) -> dict[str, QualityReport]:
    """A report per mode (in the order given), over a knowledge base the labelled documents were ingested into."""
    unknown = [m for m in modes if m not in SEARCH_MODES]
    if unknown:
        raise ValueError(f"unknown search modes {unknown}; known: {', '.join(SEARCH_MODES)}")
    return {mode: await evaluate_mode(kb, queries, mode, key=key) for mode in modes}
