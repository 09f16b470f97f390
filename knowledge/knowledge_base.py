"""The knowledge base: Markdown documents and closed incidents in, chunks found by hybrid search out.

`ingest` takes parsed documents and skips each one whose content hash is the one stored, replaces the others as a
whole; `prune` removes the documents once ingested from under some directories that are no longer there (what
`opswarm kb ingest DIR` does after the files of DIR). A closed incident becomes a document of type `incident` (a
Markdown text with front matter, so it goes through the same parser and chunker as a file), source
`incident:<id>`: a later close of the same incident replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import yaml
from qdrant_client import AsyncQdrantClient

from bus.events import IncidentClosed
from knowledge.dense_embedders import EmbeddingConfig, open_embedder
from knowledge.document_chunks import chunk_document
from knowledge.document_store import DEFAULT_COLLECTION, DocumentHit, DocumentStore, FilterValue, SearchMode
from knowledge.markdown_documents import SourceDocument, parse_document

log = logging.getLogger(__name__)

INCIDENT_SOURCE_PREFIX = "incident:"
DocumentOutcome = Literal["added", "updated", "unchanged", "failed"]


@dataclass(frozen=True)
class DocumentResult:
    source: str
    outcome: DocumentOutcome
    chunks: int = 0
    error: str = ""


@dataclass
class IngestReport:
    """What an ingestion did, document by document, and the documents it removed."""

    results: list[DocumentResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def count(self, outcome: DocumentOutcome) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.results)

    def merge(self, other: IngestReport) -> None:
        self.results.extend(other.results)
        self.removed.extend(other.removed)

    def line(self) -> str:
        return (
            f"kb ingest: documents={len(self.results)} added={self.count('added')} updated={self.count('updated')} "
            f"unchanged={self.count('unchanged')} removed={len(self.removed)} failed={self.count('failed')} "
            f"chunks={self.chunks}"
        )


class KnowledgeBase:
    """Ingestion and search over one DocumentStore (opened by the caller)."""

    def __init__(self, store: DocumentStore, *, chunk_size: int = 1000, chunk_overlap: int = 100) -> None:
        self.store = store
        self._chunk_size = chunk_size
        self._chunk_overlap = chunk_overlap

    async def ingest(self, documents: Sequence[SourceDocument]) -> IngestReport:
        """Store each document unless stored unchanged; one that fails is reported, the others go on."""
        known = await self.store.content_hashes([doc.source for doc in documents])
        report = IngestReport()
        for doc in documents:
            previous = known.get(doc.source)
            if previous == doc.content_hash:
                report.results.append(DocumentResult(doc.source, "unchanged"))
                continue
            try:
                chunks = chunk_document(doc, chunk_size=self._chunk_size, chunk_overlap=self._chunk_overlap)
                stored = await self.store.replace_document(doc.source, chunks, existing=previous is not None)
            except Exception as exc:  # noqa: BLE001 - one document's failure is reported, the batch goes on
                log.warning("document not stored", extra={"source": doc.source}, exc_info=True)
                report.results.append(DocumentResult(doc.source, "failed", error=f"{type(exc).__name__}: {exc}"))
                continue
            report.results.append(DocumentResult(doc.source, "added" if previous is None else "updated", stored))
        log.info("documents ingested", extra={"documents": len(documents), "chunks": report.chunks})
        return report

    async def prune(self, roots: Sequence[str], keep: set[str]) -> list[str]:
        """Remove the stored documents under any of `roots` (directories) whose source is not in `keep`."""
        prefixes = [root.rstrip("/") + "/" for root in roots]
        gone = sorted(
            source
            for source in await self.store.documents()
            if source not in keep and any(source.startswith(prefix) for prefix in prefixes)
        )
        await self.store.remove_documents(gone)
        if gone:
            log.info("documents removed", extra={"removed": len(gone), "roots": list(roots)})
        return gone

    async def search(
        self, query: str, k: int = 5, *, mode: SearchMode = "hybrid", filters: Mapping[str, FilterValue] | None = None
    ) -> list[DocumentHit]:
        return await self.store.search(query, k, mode=mode, filters=filters)

    async def store_incident(self, event: IncidentClosed) -> DocumentResult:
        """Store a closed incident as a document (replacing an earlier version of it)."""
        report = await self.ingest([incident_document(event)])
        [result] = report.results
        if result.outcome == "failed":
            raise RuntimeError(f"storing incident {event.incident_id} in the knowledge base failed: {result.error}")
        return result


async def open_knowledge_base(
    client: AsyncQdrantClient,
    embedding: EmbeddingConfig,
    *,
    local: bool,
    collection: str = DEFAULT_COLLECTION,
    timeout_s: float = 10.0,
) -> KnowledgeBase:
    """The knowledge base over `client`'s collection with the configured embedder (loaded and checked now); a
    collection of another embedder is re-embedded first. Raises EmbedderUnavailable when the embedder is not.

    `local`: the client is in local path mode (`AsyncQdrantClient(path=...)`), which this process alone writes:
    the store then searches the lexical vectors with its in-process index. False for a server."""
    embedder = await open_embedder(embedding)
    store = DocumentStore(client, embedder, collection, timeout_s=timeout_s, lexical_index=local)
    reindexed = await store.open()
    log.info("knowledge base opened", extra={"collection": collection, "model_id": embedder.model_id,
                                             "reindexed": reindexed})  # fmt: skip
    return KnowledgeBase(store)


def incident_document(event: IncidentClosed) -> SourceDocument:
    """A closed incident as a Markdown document: what was seen, what was thought, what was done, how it ended."""
    if event.incident_id is None:
        raise ValueError("an incident.closed event without incident_id cannot be stored")
    front = {
        "title": event.title,
        "type": "incident",
        "alerts": sorted({a.alertname for a in event.alerts}),
        "services": [event.service],
        "severity": event.severity,
        "incident_id": event.incident_id,
        "kind": event.kind,
        "outcome": event.outcome,
        "verified": event.verified,
        "actions": sorted({step.action for step in event.actions}),
        "closed_at": event.occurred_at.isoformat(),
    }
    lines = [f"# {event.title}", "", "## What happened", ""]
    lines += [f"- alert {a.alertname} on {event.service}: {', '.join(f'{k}={v}' for k, v in a.labels.items())}"
              for a in event.alerts]  # fmt: skip
    if event.hypothesis:
        lines += ["", "## Diagnosis", "", event.hypothesis]
    if event.actions:
        lines += ["", "## Actions", ""]
        lines += [f"- {step.action} on {step.target} {step.params or ''}".rstrip() for step in event.actions]
    verified = "verified" if event.verified else "not verified"
    lines += ["", "## Outcome", "", f"{event.outcome} ({verified})"]
    if event.summary:
        lines += ["", event.summary]
    text = f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n" + "\n".join(lines) + "\n"
    return parse_document(f"{INCIDENT_SOURCE_PREFIX}{event.incident_id}", text)
