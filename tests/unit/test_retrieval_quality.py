"""Retrieval quality metrics on hand-made rankings, and the shape of the shipped labelled set and its corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.document_store import DocumentHit
from knowledge.markdown_documents import is_alert_name
from knowledge.retrieval_quality import (
    EVAL_CORPUS,
    LabelledQuery,
    QualityReport,
    QueryOutcome,
    corpus_documents,
    document_key,
    document_ranking,
    load_labelled,
    mean_reciprocal_rank,
    recall_at,
    reciprocal_rank,
)


@pytest.mark.parametrize(
    ("ranked", "relevant", "k", "expected"),
    [
        ([["a", "b", "c"]], [{"a"}], 1, 1.0),
        ([["b", "a", "c"]], [{"a"}], 1, 0.0),
        ([["b", "a", "c"]], [{"a"}], 2, 1.0),
        ([["b", "c", "d"]], [{"a"}], 5, 0.0),
        ([[]], [{"a"}], 5, 0.0),
        # Two relevant documents: the denominator is min(k, |relevant|), so a perfect ranking is 1.0 at any k.
        ([["a", "b", "c"]], [{"a", "b"}], 1, 1.0),
        ([["a", "c", "b"]], [{"a", "b"}], 2, 0.5),
        ([["a", "c", "b"]], [{"a", "b"}], 3, 1.0),
        # The mean over queries.
        ([["a"], ["x", "b"], ["x", "y"]], [{"a"}, {"b"}, {"c"}], 1, 1 / 3),
        ([["a"], ["x", "b"], ["x", "y"]], [{"a"}, {"b"}, {"c"}], 5, 2 / 3),
        # A ranking shorter than k, and a relevant document repeated in it, count once.
        ([["a", "a"]], [{"a", "b"}], 5, 0.5),
    ],
)
def test_recall_at(ranked: list[list[str]], relevant: list[set[str]], k: int, expected: float) -> None:
    assert recall_at(ranked, relevant, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("ranked", "relevant", "expected"),
    [
        ([["a", "b"]], [{"a"}], 1.0),
        ([["b", "a"]], [{"a"}], 0.5),
        ([["x", "y", "z", "a"]], [{"a"}], 0.25),
        ([["x", "y"]], [{"a"}], 0.0),
        ([["x", "b", "a"]], [{"a", "b"}], 0.5),  # the first relevant one counts
        ([["a"], ["x", "b"], ["x"]], [{"a"}, {"b"}, {"c"}], (1.0 + 0.5 + 0.0) / 3),
    ],
)
def test_mean_reciprocal_rank(ranked: list[list[str]], relevant: list[set[str]], expected: float) -> None:
    assert mean_reciprocal_rank(ranked, relevant) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("ranked", "relevant", "message"),
    [
        ([["a"]], [{"a"}, {"b"}], "1 rankings but 2 relevant sets"),
        ([], [], "no queries"),
        ([["a"]], [set()], "at least one relevant"),
    ],
)
def test_metrics_refuse_malformed_input(ranked: list[list[str]], relevant: list[set[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recall_at(ranked, relevant, 1)
    with pytest.raises(ValueError, match=message):
        mean_reciprocal_rank(ranked, relevant)


def test_recall_needs_a_positive_k() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        recall_at([["a"]], [{"a"}], 0)


def test_reciprocal_rank_of_an_empty_ranking_is_zero() -> None:
    assert reciprocal_rank([], {"a"}) == 0.0


def _hit(source: str, score: float = 1.0) -> DocumentHit:
    return DocumentHit(
        chunk_id=f"{source}-{score}", score=score, source=source, title="t", section="", type="runbook",
        snippet="", payload={},
    )  # fmt: skip


def test_document_ranking_counts_a_document_once_at_its_best_chunk() -> None:
    hits = [_hit("/kb/b.md", 0.9), _hit("/kb/a.md", 0.8), _hit("/kb/b.md", 0.7), _hit("/x/c.md", 0.6)]
    assert document_ranking(hits) == ["b.md", "a.md", "c.md"]


def test_document_ranking_stops_at_its_depth_and_takes_a_key() -> None:
    hits = [_hit(f"/kb/{n}.md") for n in "abcdef"]
    assert document_ranking(hits, depth=3) == ["a.md", "b.md", "c.md"]
    assert document_ranking(hits[:2], key=str.upper) == ["/KB/A.MD", "/KB/B.MD"]


@pytest.mark.parametrize(
    ("source", "key"),
    [("/repo/knowledge/eval_corpus/disk.md", "disk.md"), ("disk.md", "disk.md"), ("incident:abc", "incident:abc")],
)
def test_document_key_is_the_file_name(source: str, key: str) -> None:
    assert document_key(source) == key


def _outcome(ranking: list[str], relevant: set[str], kind: str = "alert") -> QueryOutcome:
    return QueryOutcome(LabelledQuery(query="q", relevant=frozenset(relevant), kind=kind), ranking)


def test_quality_report_line_and_breakdowns() -> None:
    outcomes = [
        _outcome(["a.md", "b.md"], {"a.md"}),
        _outcome(["x.md", "b.md"], {"b.md"}),
        _outcome(["x.md", "y.md", "z.md", "w.md", "v.md", "c.md"], {"c.md"}),
        _outcome(["p.md"], {"p.md"}, kind="incident"),
    ]
    report = QualityReport.of("hybrid", outcomes)
    assert report.line() == "kb quality: mode=hybrid queries=4 recall@1=0.50 recall@5=0.75 mrr=0.67"
    assert report.of_kind("incident").line() == (
        "kb quality: mode=hybrid/incident queries=1 recall@1=1.00 recall@5=1.00 mrr=1.00"
    )
    assert [o.ranking[0] for o in report.misses(1)] == ["x.md", "x.md"]  # worst (reciprocal rank 1/6) first
    assert report.misses(1)[0].reciprocal_rank == pytest.approx(1 / 6)
    assert report.misses(5) == [outcomes[2]]


def test_load_labelled_reads_kinds_filters_and_single_names(tmp_path: Path) -> None:
    path = tmp_path / "set.yaml"
    path.write_text(
        "alerts:\n"
        "  - query: >-\n      DiskFull   disk\n      is full\n    relevant: disk.md\n"
        "incidents:\n"
        "  - query: an incident\n    relevant: [a.md, b.md]\n    filters: {type: postmortem}\n",
        encoding="utf-8",
    )
    [alert, incident] = load_labelled(path)
    assert alert == LabelledQuery(query="DiskFull disk is full", relevant=frozenset({"disk.md"}), kind="alert")
    assert incident.kind == "incident" and incident.relevant == {"a.md", "b.md"}
    assert incident.filters == {"type": "postmortem"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- query: q\n", "expected a mapping"),
        ("alerts:\n  - relevant: [a.md]\n", r"alerts\[1\] needs a non-empty `query`"),
        ("alerts:\n  - query: q\n    relevant: []\n", "needs `relevant`"),
        ("alerts:\n  - query: q\n    relevant: [a.md]\n    filters: [x]\n", "`filters` must be a mapping"),
    ],
)
def test_load_labelled_rejects_malformed_entries(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "set.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_labelled(path)


# ---------------------------------------------------------------- the shipped labelled set and corpus


def test_the_labelled_set_covers_alerts_and_incidents() -> None:
    queries = load_labelled()
    alerts = [q for q in queries if q.kind == "alert"]
    incidents = [q for q in queries if q.kind == "incident"]
    assert len(alerts) >= 40 and len(incidents) >= 8
    words = [q.query.split() for q in alerts]
    name_only = [w for w in words if len(w) == 1 and is_alert_name(w[0])]
    without_name = [w for w in words if not any(is_alert_name(word.strip(".,:;\"'")) for word in w)]
    assert len(name_only) >= 5, "some queries are the alert name alone"
    assert len(without_name) >= 15, "some queries are the description alone, without any alert name"
    assert all(q.filters == {"type": "postmortem"} for q in incidents)


def test_every_labelled_document_is_in_the_corpus_and_every_document_is_labelled() -> None:
    documents = {document_key(d.source): d for d in corpus_documents()}
    labelled = {name for q in load_labelled() for name in q.relevant}
    assert labelled <= set(documents), sorted(labelled - set(documents))
    assert set(documents) <= labelled, sorted(set(documents) - labelled)
    for q in load_labelled():
        wanted = "postmortem" if q.kind == "incident" else "runbook"
        assert {documents[name].type for name in q.relevant} == {wanted}, q.query


def test_the_corpus_documents_declare_their_front_matter() -> None:
    documents = corpus_documents()
    runbooks = [d for d in documents if d.type == "runbook"]
    postmortems = [d for d in documents if d.type == "postmortem"]
    assert 25 <= len(runbooks) <= 30 and 4 <= len(postmortems) <= 6
    for doc in documents:
        assert doc.metadata.get("title") and doc.metadata.get("alerts") and doc.severity, doc.source
        lines = (EVAL_CORPUS / document_key(doc.source)).read_text(encoding="utf-8").count("\n")
        assert 30 <= lines <= 70, f"{doc.source}: {lines} lines"
