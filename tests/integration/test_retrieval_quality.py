"""The knowledge base's retrieval quality on its labelled set, with the real local dense model (all-MiniLM-L6-v2)
in a local Qdrant: recall@1, recall@5 and MRR per search mode, above floors measured on this corpus.

The floors are the figures measured when the labelled set was written (sparse 0.90/0.98/0.93, dense 0.79/0.94/0.86,
hybrid 0.88/1.00/0.93 for recall@1/recall@5/MRR over 86 queries) minus a margin of about four queries, so that a
change to chunking, the sparse weighting, the embedding text or the fusion that costs retrieval quality fails
here. Run with `-s` to see each mode's line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from knowledge.dense_embedders import EmbeddingConfig
from knowledge.knowledge_base import KnowledgeBase, open_knowledge_base
from knowledge.markdown_documents import SourceDocument, find_documents, read_document
from knowledge.retrieval_quality import (
    SEARCH_DEPTH,
    QualityReport,
    corpus_documents,
    document_ranking,
    evaluate,
    load_labelled,
)

pytestmark = pytest.mark.integration

DEMO_RUNBOOKS = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "runbooks"
# mode -> (recall@1, recall@5, MRR) floors.
FLOORS = {
    "sparse": (0.85, 0.93, 0.88),
    "dense": (0.74, 0.89, 0.81),
    "hybrid": (0.83, 0.95, 0.88),
}


@pytest.fixture(scope="module")
async def qdrant(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncQdrantClient]:
    client = AsyncQdrantClient(path=str(tmp_path_factory.mktemp("kb-quality")))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def eval_kb(qdrant: AsyncQdrantClient) -> KnowledgeBase:
    """The eval corpus alone, embedded with the default local model (loaded once for the module)."""
    kb = await open_knowledge_base(qdrant, EmbeddingConfig(), local=True, collection="eval-corpus")
    report = await kb.ingest(corpus_documents())
    assert report.count("failed") == 0, report.line()
    return kb


@pytest.fixture(scope="module")
async def reports(eval_kb: KnowledgeBase) -> dict[str, QualityReport]:
    found = await evaluate(eval_kb, load_labelled())
    for report in found.values():
        print(report.line())
        for kind in ("alert", "incident"):
            print(f"  {report.of_kind(kind).line()}")
    return found


def _describe(report: QualityReport) -> str:
    misses = [
        f"  rr={o.reciprocal_rank:.2f} want {sorted(o.query.relevant)} got {o.ranking[:3]}: {o.query.query[:80]}"
        for o in report.misses(1)
    ]
    return "\n".join([report.line(), *misses])


@pytest.mark.parametrize("mode", list(FLOORS))
async def test_quality_of_each_mode_stays_above_its_floor(reports: dict[str, QualityReport], mode: str) -> None:
    report = reports[mode]
    recall_1, recall_5, mrr = FLOORS[mode]
    assert report.queries == len(load_labelled())
    assert report.recall_at_1 >= recall_1, _describe(report)
    assert report.recall_at_5 >= recall_5, _describe(report)
    assert report.mrr >= mrr, _describe(report)


async def test_hybrid_is_not_worse_than_the_worse_single_mode(reports: dict[str, QualityReport]) -> None:
    worse = min(reports["sparse"].mrr, reports["dense"].mrr)
    assert reports["hybrid"].mrr >= worse, "\n".join(r.line() for r in reports.values())


def _demo_cases() -> list[tuple[str, str]]:
    """(demo runbook file, alert name) for every alert of a demo runbook that no eval corpus document claims
    (an alert two runbooks both answer, such as TargetDown, has no single right answer)."""
    claimed = {name for doc in corpus_documents() for name in doc.metadata.get("alerts", [])}
    cases = []
    for path in find_documents([DEMO_RUNBOOKS]) if DEMO_RUNBOOKS.is_dir() else []:
        alerts = read_document(path).metadata.get("alerts") or []
        cases.extend((path.name, alert) for alert in alerts if alert not in claimed)
    return cases


@pytest.fixture(scope="module")
async def combined_kb(
    eval_kb: KnowledgeBase, reports: dict[str, QualityReport]
) -> tuple[KnowledgeBase, list[SourceDocument]]:
    """The eval corpus and the demo runbooks together: the demo runbooks are added to the eval corpus's collection
    once the labelled set has been measured on it (hence the dependency on `reports`), which saves embedding the
    corpus twice."""
    demo = [read_document(path) for path in find_documents([DEMO_RUNBOOKS])]
    report = await eval_kb.ingest(demo)
    assert report.count("failed") == 0, report.line()
    return eval_kb, demo


def test_there_are_demo_runbooks_to_find() -> None:
    assert len({name for name, _ in _demo_cases()}) >= 5, _demo_cases()


@pytest.mark.parametrize(("runbook", "alert"), _demo_cases(), ids=[f"{r}:{a}" for r, a in _demo_cases()])
async def test_each_demo_runbook_is_found_first_by_its_alert_name(
    combined_kb: tuple[KnowledgeBase, list[SourceDocument]], runbook: str, alert: str
) -> None:
    kb, demo = combined_kb
    [wanted] = [doc.source for doc in demo if Path(doc.source).name == runbook]
    ranking = document_ranking(await kb.search(alert, SEARCH_DEPTH, mode="hybrid"), key=str)
    assert ranking[:1] == [wanted], ranking[:3]
