"""`make bench-kb`: the knowledge base's ingest rate and search latency on a generated corpus, local Qdrant.

The corpus is generated deterministically (seeded) from the eval corpus (knowledge/eval_corpus): each document
takes the sections of one runbook or postmortem, swaps some of them for the same section of another document,
renames the alert and the service it is about, and adds a short service context section, until chunking
(`KnowledgeBase.ingest`, default chunk size) yields at least `--chunks` chunks. It is ingested into a fresh local
Qdrant directory (by default a temporary one under <state_dir>/bench-kb, removed afterwards) with the configured
embedder (by default the local all-MiniLM-L6-v2): the ingest rate is chunks per second of wall time of the
ingestion, embedding included, model load excluded. Then `--queries` searches (alert names and descriptions of
the labelled set, and generated ones) run one after the other in `--mode`; each one's wall time is measured, and
the time its query spent in the embedder is reported alongside. rss_mb is the peak RSS of the process.

Targets (reported, not asserted: the exit status is 0 whether they are met or not): search p95 <= 100 ms at
10,000 chunks, ingest >= 50 chunks/s with the local dense model.

Last line: `bench-kb: chunks=N ingest_per_s=N search_p50_ms=N search_p95_ms=N rss_mb=N`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qdrant_client import AsyncQdrantClient

from deploy.settings import Settings
from knowledge.dense_embedders import EmbeddingConfig, open_embedder
from knowledge.document_chunks import chunk_document, split_sections
from knowledge.document_store import SEARCH_MODES, DocumentStore, SearchMode
from knowledge.knowledge_base import KnowledgeBase
from knowledge.markdown_documents import SourceDocument, humanise, parse_document
from knowledge.retrieval_quality import corpus_documents, load_labelled
from knowledge.text_vectors import Embedder

log = logging.getLogger(__name__)

COLLECTION = "bench"
SEARCH_P95_TARGET_MS = 100.0
INGEST_TARGET_PER_S = 50.0
WARMUP_QUERIES = 5
INGEST_BATCH_DOCUMENTS = 100
SWAP_SECTION_PROBABILITY = 0.35

SERVICES = (
    "checkout", "payments", "orders", "cart", "catalog", "search", "inventory", "shipping", "billing", "invoices",
    "accounts", "auth", "profile", "notifications", "mailer", "recommendations", "pricing", "reviews", "media",
    "thumbnailer", "ingest", "reporting", "ledger", "fraud", "gateway", "storefront", "webhooks", "scheduler",
)  # fmt: skip
AREAS = ("Api", "Db", "Queue", "Cache", "Node", "Pod", "Gateway", "Worker", "Disk", "Broker", "Ingress", "Job")
METRICS = ("Latency", "ErrorRate", "Memory", "DiskSpace", "Connections", "ConsumerLag", "Restarts", "Cpu",
           "Certificate", "Replication", "Throughput", "Saturation")  # fmt: skip
CONDITIONS = ("High", "Critical", "Growing", "Exhausted", "Stuck", "Down", "Spike", "Degraded")
OWNERS = ("payments-team", "platform", "storefront-team", "data-eng", "sre", "identity-team", "growth")
_ALERT_WORD = re.compile(r"\b[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+\b")


@dataclass(frozen=True)
class Template:
    """A corpus document taken apart: its type, alert names and (level-2 section name, text) pairs."""

    type: str
    alerts: tuple[str, ...]
    severity: str
    sections: list[tuple[str, str]]


def templates() -> list[Template]:
    found = []
    for doc in corpus_documents():
        sections = [(section.split(" > ")[-1], text) for section, text in split_sections(doc.body) if section]
        # The first section holds the document's title line ("# Title\n\n## Meaning ..."): keep its "##" part.
        sections = [(name, text[text.find("## ") :] if text.startswith("# ") else text) for name, text in sections]
        found.append(Template(doc.type, doc.alertnames, doc.severity or "warning", sections))
    return found


@dataclass
class GeneratedCorpus:
    documents: list[SourceDocument] = field(default_factory=list)
    chunks: int = 0
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (alert name, service) of each document
    sentences: list[str] = field(default_factory=list)


def generate_corpus(target_chunks: int, seed: int) -> GeneratedCorpus:
    """Documents until their chunks reach `target_chunks`; the same seed gives the same corpus."""
    rng = random.Random(seed)
    pool = templates()
    known_alerts = frozenset(name for template in pool for name in template.alerts)
    by_section: dict[str, list[str]] = {}
    for template in pool:
        for name, text in template.sections:
            by_section.setdefault(name, []).append(text)
    corpus = GeneratedCorpus()
    while corpus.chunks < target_chunks:
        number = len(corpus.documents)
        template = rng.choice(pool)
        service = f"{rng.choice(SERVICES)}{rng.choice(('', '', '-api', '-worker', '-db', f'-{number % 7}'))}"
        alert = f"{rng.choice(AREAS)}{rng.choice(METRICS)}{rng.choice(CONDITIONS)}"
        doc = _document(rng, number, template, by_section, known_alerts, alert, service)
        corpus.documents.append(doc)
        corpus.chunks += len(chunk_document(doc))
        corpus.alerts.append((alert, service))
        body_lines = [line.strip("-* ") for line in doc.body.splitlines() if len(line.split()) >= 8]
        if body_lines:
            corpus.sentences.append(rng.choice(body_lines))
    return corpus


def _document(
    rng: random.Random, number: int, template: Template, by_section: dict[str, list[str]],
    known_alerts: frozenset[str], alert: str, service: str,
) -> SourceDocument:
    """One generated document; every alert name of the eval corpus in its text becomes `alert`."""
    title = f"{humanise(re.sub(r'(?<=[a-z])(?=[A-Z])', ' ', alert)).capitalize()} on {service}"
    lines = [
        "---", f"title: {title}", f"type: {template.type}", f"alerts: [{alert}]", f"services: [{service}]",
        f"severity: {template.severity}", "---", f"# {title}", "",
    ]  # fmt: skip
    for name, text in template.sections:
        if rng.random() < SWAP_SECTION_PROBABILITY and len(by_section.get(name, [])) > 1:
            text = rng.choice(by_section[name])
        text = _ALERT_WORD.sub(lambda m: alert if m.group() in known_alerts else m.group(), text)
        lines += [text.replace("<namespace>", f"{service}-prod").replace("<name>", service), ""]
    owner, dependency = rng.choice(OWNERS), rng.choice(SERVICES)
    lines += [
        "## Service context", "",
        f"{service} is owned by {owner}; it calls {dependency} and is deployed to the {service}-prod namespace.",
        f"Dashboards: `{service} / overview`, `{service} / saturation`. Runbook revision {number % 13 + 1}.", "",
    ]  # fmt: skip
    return parse_document(f"bench/{number:05d}-{alert}-{service}.md", "\n".join(lines))


class TimedEmbedder:
    """An embedder that records how long each `embed` call took (to split a search's time into its parts)."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner
        self.last_s = 0.0
        self.total_s = 0.0

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        started = time.perf_counter()
        try:
            return await self._inner.embed(texts)
        finally:
            self.last_s = time.perf_counter() - started
            self.total_s += self.last_s


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in (0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def queries_for(corpus: GeneratedCorpus, count: int, seed: int) -> list[str]:
    """Half from the labelled set (alert names and descriptions), half generated from the corpus."""
    rng = random.Random(seed + 1)
    labelled = [q.query for q in load_labelled()]
    generated = []
    for alert, service in corpus.alerts:
        generated.append(rng.choice((alert, f"{alert} service={service}", f"{alert} firing for {service}")))
    generated += [f"{sentence} service={rng.choice(SERVICES)}" for sentence in corpus.sentences]
    rng.shuffle(generated)
    half = count // 2
    chosen = [labelled[i % len(labelled)] for i in range(half)] + generated[: count - half]
    rng.shuffle(chosen)
    return chosen


@dataclass
class BenchResult:
    documents: int
    chunks: int
    ingest_s: float
    ingest_embed_s: float
    load_s: float
    search_ms: list[float]
    embed_ms: list[float]
    model_id: str

    @property
    def ingest_per_s(self) -> float:
        return self.chunks / self.ingest_s if self.ingest_s > 0 else 0.0


async def run(path: Path, embedding: EmbeddingConfig, chunks: int, queries: int, mode: SearchMode, k: int,
              seed: int) -> BenchResult:  # fmt: skip
    started = time.perf_counter()
    corpus = generate_corpus(chunks, seed)
    say(f"corpus: {len(corpus.documents)} documents, {corpus.chunks} chunks "
        f"(generated in {time.perf_counter() - started:.1f} s)")  # fmt: skip
    client = AsyncQdrantClient(path=str(path))
    try:
        started = time.perf_counter()
        embedder = TimedEmbedder(await open_embedder(embedding))
        load_s = time.perf_counter() - started
        say(f"embedder: {embedder.model_id} loaded in {load_s:.1f} s")
        store = DocumentStore(client, embedder, COLLECTION, timeout_s=120.0, lexical_index=True)
        await store.open()
        kb = KnowledgeBase(store)
        embedder.total_s = 0.0
        ingest_s = await _ingest(kb, corpus)
        ingest_embed_s = embedder.total_s
        stored = await store.count()
        search_ms, embed_ms = await _search(kb, embedder, queries_for(corpus, queries, seed), mode, k)
        return BenchResult(
            len(corpus.documents), stored, ingest_s, ingest_embed_s, load_s, search_ms, embed_ms, embedder.model_id
        )
    finally:
        await client.close()


async def _ingest(kb: KnowledgeBase, corpus: GeneratedCorpus) -> float:
    started = time.perf_counter()
    done = 0
    for start in range(0, len(corpus.documents), INGEST_BATCH_DOCUMENTS):
        report = await kb.ingest(corpus.documents[start : start + INGEST_BATCH_DOCUMENTS])
        failed = [r for r in report.results if r.outcome == "failed"]
        if failed:
            raise RuntimeError(f"ingesting {failed[0].source} failed: {failed[0].error}")
        done += report.chunks
        elapsed = time.perf_counter() - started
        say(f"ingest: {done}/{corpus.chunks} chunks, {done / elapsed:.1f} chunks/s")
    return time.perf_counter() - started


async def _search(
    kb: KnowledgeBase, embedder: TimedEmbedder, queries: list[str], mode: SearchMode, k: int
) -> tuple[list[float], list[float]]:
    for query in queries[:WARMUP_QUERIES]:
        await kb.search(query, k, mode=mode)
    search_ms: list[float] = []
    embed_ms: list[float] = []
    for number, query in enumerate(queries, start=1):
        embedder.last_s = 0.0
        started = time.perf_counter()
        await kb.search(query, k, mode=mode)
        search_ms.append((time.perf_counter() - started) * 1000)
        embed_ms.append(embedder.last_s * 1000)
        if number % 50 == 0 or number == len(queries):
            say(f"search: {number}/{len(queries)} queries, p50 {percentile(search_ms, 0.5):.1f} ms")
    return search_ms, embed_ms


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def report_lines(result: BenchResult, mode: str, k: int) -> list[str]:
    p50, p95 = percentile(result.search_ms, 0.5), percentile(result.search_ms, 0.95)
    e50, e95 = percentile(result.embed_ms, 0.5), percentile(result.embed_ms, 0.95)
    search_met = "met" if p95 <= SEARCH_P95_TARGET_MS else "MISSED"
    ingest_met = "met" if result.ingest_per_s >= INGEST_TARGET_PER_S else "MISSED"
    rss = peak_rss_mb()
    rows = [
        ("documents", f"{result.documents}", ""),
        ("chunks stored", f"{result.chunks}", ""),
        ("model load s", f"{result.load_s:.1f}", "(not in the ingest time)"),
        ("ingest s", f"{result.ingest_s:.1f}", ""),
        ("  of which embedding s", f"{result.ingest_embed_s:.1f}", "(the chunks' dense vectors)"),
        ("ingest chunks/s", f"{result.ingest_per_s:.1f}", f"target >= {INGEST_TARGET_PER_S:.0f}: {ingest_met}"),
        (f"search p50 ms ({mode}, k={k})", f"{p50:.1f}", ""),
        (f"search p95 ms ({mode}, k={k})", f"{p95:.1f}", f"target <= {SEARCH_P95_TARGET_MS:.0f}: {search_met}"),
        ("  of which embedding p50/p95", f"{e50:.1f}/{e95:.1f}", "(the query's dense vector)"),
        ("queries", f"{len(result.search_ms)}", ""),
        ("peak rss MB", f"{rss}", ""),
    ]
    table = [f"bench-kb: {result.model_id}, local Qdrant"]
    table += [f"  {name:<34} {value:>12}  {note}".rstrip() for name, value, note in rows]
    return [
        *table,
        f"targets: search_p95_ms<={SEARCH_P95_TARGET_MS:.0f} {search_met}, "
        f"ingest_per_s>={INGEST_TARGET_PER_S:.0f} {ingest_met}",
        f"bench-kb: chunks={result.chunks} ingest_per_s={result.ingest_per_s:.1f} search_p50_ms={p50:.1f} "
        f"search_p95_ms={p95:.1f} rss_mb={rss}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000, help="at least this many chunks are ingested")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--mode", choices=SEARCH_MODES, default="hybrid")
    parser.add_argument("--k", type=int, default=10, help="chunks asked for per search")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--path", type=Path, help="Qdrant directory (new or empty; kept); default: a temporary one")
    args = parser.parse_args()
    if args.chunks < 1 or args.queries < 1 or args.k < 1:
        parser.error("--chunks, --queries and --k must be positive")
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    if args.path is not None:
        if args.path.exists() and any(args.path.iterdir()):
            parser.error(f"--path {args.path} is not empty: the benchmark needs a fresh Qdrant directory")
        args.path.mkdir(parents=True, exist_ok=True)
        path, remove = args.path, False
    else:
        parent = settings.state_dir / "bench-kb"
        parent.mkdir(parents=True, exist_ok=True)
        path, remove = Path(tempfile.mkdtemp(prefix="run-", dir=parent)), True
    try:
        result = asyncio.run(run(path, settings.embedding, args.chunks, args.queries, args.mode, args.k, args.seed))
    finally:
        if remove:
            shutil.rmtree(path, ignore_errors=True)
    print("\n".join(report_lines(result, args.mode, args.k)))


if __name__ == "__main__":
    main()
