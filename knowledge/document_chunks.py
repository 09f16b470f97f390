"""Chunks of a Markdown document for the knowledge base: one per section, long sections split further.

`chunk_document` splits a `SourceDocument`'s body with langchain-text-splitters: `MarkdownHeaderTextSplitter` on
`#`, `##` and `###` (the header lines stay in the text), then `RecursiveCharacterTextSplitter` (`chunk_size` and
`chunk_overlap` in characters) for a section longer than `chunk_size`. A chunk's `section` is its header path
("Disk full > Remediation"; "" before the first header); a header directly followed by a deeper one goes with
it ("# Disk full" then "## Symptoms": one chunk, section "Disk full > Symptoms").

The header splitter strips every line and drops blank lines (paragraphs come out joined by "  \\n"); before it,
each line's indentation is swapped for placeholder characters and tabs are expanded, and after it the
indentation and the paragraph breaks are put back, so code blocks and nested lists keep their shape.

A chunk's id is a UUIDv5 of the document's source and the chunk's index, so re-ingesting a document overwrites
its points instead of adding new ones. `embedding_text` is what gets embedded: title, section, the document's
alert names and services, then the text (the short fields first, so an embedder that truncates keeps them).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from knowledge.markdown_documents import DocType, SourceDocument

# The namespace of chunk ids (uuid5). Never change it: every stored chunk's id derives from it.
CHUNK_POINTS = uuid.UUID("ded131f6-b13b-413e-8ebb-f3bd761943e9")

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_CHUNK_OVERLAP = 100
SECTION_SEPARATOR = " > "
_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]
_HEADER_KEYS = [key for _, key in _HEADERS]
_TAB_SIZE = 4
# Stands in for a leading space through the header splitter, which strips lines (U+2420 SYMBOL FOR SPACE).
_INDENT = "\u2420"
_RESTORE_INDENT = re.compile(rf"^{_INDENT}+", re.MULTILINE)
# How the header splitter joins two paragraphs of a section (it strips trailing spaces, so nothing else does).
_PARAGRAPH_JOIN = "  \n"


@dataclass(frozen=True)
class DocumentChunk:
    """A piece of a document, with the document's fields that search filters on."""

    chunk_id: str
    source: str
    title: str
    section: str
    type: DocType
    index: int
    text: str
    alertnames: tuple[str, ...]
    services: tuple[str, ...]
    severity: str | None
    content_hash: str

    def embedding_text(self) -> str:
        """Title, section, "alerts: ..." and "services: ..." lines when there are any, then the text."""
        lines = [self.title]
        if self.section and self.section != self.title:
            lines.append(self.section)
        if self.alertnames:
            lines.append(f"alerts: {', '.join(self.alertnames)}")
        if self.services:
            lines.append(f"services: {', '.join(self.services)}")
        lines.append(self.text)
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """Every field but chunk_id, JSON-compatible (tuples as lists)."""
        return {
            "source": self.source,
            "title": self.title,
            "section": self.section,
            "type": self.type,
            "index": self.index,
            "text": self.text,
            "alertnames": list(self.alertnames),
            "services": list(self.services),
            "severity": self.severity,
            "content_hash": self.content_hash,
        }


def chunk_id(source: str, index: int) -> str:
    """The id of a document's `index`th chunk (stable across runs and processes)."""
    return str(uuid.uuid5(CHUNK_POINTS, f"{source}\x1f{index}"))


def chunk_document(
    doc: SourceDocument, *, chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
) -> list[DocumentChunk]:
    """The document's chunks in order, indices 0..n-1; none for a blank document. Every chunk's text is at most
    `chunk_size` characters unless a single unbreakable piece is longer (the character splitter then cuts it)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be at least 0 and below chunk_size ({chunk_size}), not {chunk_overlap}")
    pieces = [
        (section, text)
        for section, section_text in split_sections(doc.body)
        for text in _split_long(section_text, chunk_size, chunk_overlap)
        if text.strip()
    ]
    return [
        DocumentChunk(
            chunk_id=chunk_id(doc.source, index),
            source=doc.source,
            title=doc.title,
            section=section,
            type=doc.type,
            index=index,
            text=text,
            alertnames=doc.alertnames,
            services=doc.services,
            severity=doc.severity,
            content_hash=doc.content_hash,
        )
        for index, (section, text) in enumerate(pieces)
    ]


def split_sections(body: str) -> list[tuple[str, str]]:
    """(header path, text with its header lines) of each section of a Markdown body, in order."""
    splitter = MarkdownHeaderTextSplitter(headers_to_split_on=_HEADERS, strip_headers=False)
    sections: list[tuple[str, str]] = []
    for part in splitter.split_text(_protect_indentation(body)):
        section = SECTION_SEPARATOR.join(part.metadata[key] for key in _HEADER_KEYS if part.metadata.get(key))
        text = _RESTORE_INDENT.sub(lambda m: " " * len(m.group()), part.page_content.replace(_PARAGRAPH_JOIN, "\n\n"))
        sections.append((section, text.strip("\n")))
    return sections


def _split_long(text: str, chunk_size: int, chunk_overlap: int) -> list[str]:
    if len(text) <= chunk_size:
        return [text]
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    return splitter.split_text(text)


def _protect_indentation(body: str) -> str:
    """Each non-blank line's leading whitespace as placeholders, tabs expanded; line endings as "\\n"."""
    lines = []
    for line in body.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        expanded = line.expandtabs(_TAB_SIZE)
        content = expanded.lstrip(" ")
        lines.append(_INDENT * (len(expanded) - len(content)) + content if content.strip() else "")
    return "\n".join(lines)
