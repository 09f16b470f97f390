"""What a knowledge base search returns: `DocumentHit`, a chunk found with its score and a snippet of its text (the
window of whole lines or sentences holding most query terms)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from bus.events import KnowledgeHit
from knowledge.text_vectors import tokens

SNIPPET_CHARS = 280


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


def hit_of(point_id: str, score: float, payload: dict[str, Any], terms: set[str]) -> DocumentHit:
    """The hit of a point found: its payload without the text, whose best window becomes the snippet."""
    text = str(payload.pop("text", ""))
    return DocumentHit(
        chunk_id=point_id, score=score, source=str(payload.get("source", "")),
        title=str(payload.get("title", "")), section=str(payload.get("section", "")),
        type=str(payload.get("type", "")), snippet=best_snippet(text, terms), payload=payload,
    )  # fmt: skip


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
