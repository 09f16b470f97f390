"""Chunking Markdown documents: section paths, long sections split, stable ids, payloads, embedding text."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from knowledge.document_chunks import CHUNK_POINTS, DocumentChunk, chunk_document, chunk_id, split_sections
from knowledge.markdown_documents import parse_document, read_document

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "deploy" / "demo" / "runbooks"

RUNBOOK = """---
title: Disk full
alerts: [DiskFull]
services: [checkout]
severity: warning
---
Read this first.

# Disk full

## Symptoms

The data dir fills up.

## Remediation

Run clear_disk.

### When it fails

Page the owner.

## Verification

Disk below the threshold.
"""


def test_sections_and_header_paths() -> None:
    chunks = chunk_document(parse_document("/docs/runbooks/disk-full.md", RUNBOOK))
    assert [(c.index, c.section) for c in chunks] == [
        (0, ""),
        (1, "Disk full > Symptoms"),
        (2, "Disk full > Remediation"),
        (3, "Disk full > Remediation > When it fails"),
        (4, "Disk full > Verification"),
    ]
    assert chunks[0].text == "Read this first."
    # The header lines stay in the text; a header directly followed by a deeper one goes with it.
    assert chunks[1].text == "# Disk full\n\n## Symptoms\n\nThe data dir fills up."
    assert chunks[3].text == "### When it fails\n\nPage the owner."


def test_chunks_carry_the_document_fields() -> None:
    doc = parse_document("/docs/runbooks/disk-full.md", RUNBOOK)
    for chunk in chunk_document(doc):
        assert chunk.source == doc.source
        assert chunk.title == "Disk full"
        assert chunk.type == "runbook"
        assert chunk.alertnames == ("DiskFull",)
        assert chunk.services == ("checkout",)
        assert chunk.severity == "warning"
        assert chunk.content_hash == doc.content_hash


def test_headers_in_code_blocks_do_not_split_and_indentation_survives() -> None:
    body = "# Fix\n\n```sh\n# a shell comment\nif true; then\n\techo ok\n    echo four\nfi\n```\n\n- item\n  - nested\n"
    (chunk,) = chunk_document(parse_document("x.md", body))
    assert chunk.section == "Fix"
    assert chunk.text == (
        "# Fix\n\n```sh\n# a shell comment\nif true; then\n    echo ok\n    echo four\nfi\n```\n\n- item\n  - nested"
    )


def test_level_four_headers_stay_in_their_section() -> None:
    chunks = chunk_document(parse_document("x.md", "## Steps\n\n#### Detail\n\ntext\n"))
    assert [(c.section, c.text) for c in chunks] == [("Steps", "## Steps\n\n#### Detail\n\ntext")]


@pytest.mark.parametrize(("chunk_size", "chunk_overlap"), [(200, 0), (200, 40), (120, 20), (1000, 100)])
def test_long_sections_are_split_under_chunk_size(chunk_size: int, chunk_overlap: int) -> None:
    paragraphs = "\n\n".join(f"Paragraph {n} says something about the disk and its files." * 3 for n in range(20))
    body = f"# Long\n\n## Part\n\n{paragraphs}\n\n## Short\n\nDone.\n"
    chunks = chunk_document(parse_document("x.md", body), chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    assert len(chunks) > 3
    assert all(len(c.text) <= chunk_size for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert {c.section for c in chunks[:-1]} == {"Long > Part"}
    assert chunks[-1].section == "Long > Short"
    assert chunks[-1].text == "## Short\n\nDone."
    for n in range(20):
        assert any(f"Paragraph {n} " in c.text for c in chunks)


def test_one_unbreakable_line_is_cut() -> None:
    chunks = chunk_document(parse_document("x.md", "x" * 250), chunk_size=100, chunk_overlap=0)
    assert [len(c.text) for c in chunks] == [100, 100, 50]


@pytest.mark.parametrize("body", ["", "   \n\n\t\n", "---\ntitle: Only front matter\n---\n\n"])
def test_blank_documents_have_no_chunks(body: str) -> None:
    assert chunk_document(parse_document("x.md", body)) == []


def test_blank_sections_are_dropped_and_indices_stay_contiguous() -> None:
    body = "\n\n   \n# A\n\ntext a\n\n```\n\n```\n\n# B\n\ntext b\n"
    chunks = chunk_document(parse_document("x.md", body))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(c.text.strip() for c in chunks)
    assert [c.section for c in chunks] == ["A", "B"]


def test_chunk_ids_are_stable_uuid5() -> None:
    doc = parse_document("/docs/runbooks/disk-full.md", RUNBOOK)
    first, again = chunk_document(doc), chunk_document(parse_document(doc.source, RUNBOOK + "\nMore.\n"))
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again[: len(first)]]
    assert first[0].chunk_id == str(uuid.uuid5(CHUNK_POINTS, "/docs/runbooks/disk-full.md\x1f0"))
    assert first[2].chunk_id == chunk_id(doc.source, 2)
    assert len({c.chunk_id for c in first}) == len(first)
    other = chunk_document(parse_document("/docs/runbooks/other.md", RUNBOOK))
    assert not {c.chunk_id for c in first} & {c.chunk_id for c in other}


def test_chunk_ids_never_change() -> None:
    # Stored points are keyed by these ids: a change here orphans every chunk already in a collection.
    assert str(CHUNK_POINTS) == "ded131f6-b13b-413e-8ebb-f3bd761943e9"
    assert chunk_id("/docs/runbooks/disk-full.md", 0) == "a14c5a0d-35a3-5b5a-aa36-718f9ff19f9a"


def test_payload_is_json_and_complete() -> None:
    chunk = chunk_document(parse_document("/docs/runbooks/disk-full.md", RUNBOOK))[2]
    payload = chunk.payload()
    assert json.loads(json.dumps(payload)) == payload
    assert payload == {
        "source": "/docs/runbooks/disk-full.md",
        "title": "Disk full",
        "section": "Disk full > Remediation",
        "type": "runbook",
        "index": 2,
        "text": "## Remediation\n\nRun clear_disk.",
        "alertnames": ["DiskFull"],
        "services": ["checkout"],
        "severity": "warning",
        "content_hash": chunk.content_hash,
    }
    assert set(payload) == {f for f in DocumentChunk.__dataclass_fields__ if f != "chunk_id"}


def test_embedding_text() -> None:
    chunk = chunk_document(parse_document("/docs/runbooks/disk-full.md", RUNBOOK))[2]
    assert chunk.embedding_text() == (
        "Disk full\nDisk full > Remediation\nalerts: DiskFull\nservices: checkout\n## Remediation\n\nRun clear_disk."
    )
    bare = chunk_document(parse_document("notes.md", "Plain text."))[0]
    assert bare.embedding_text() == "Notes\nPlain text."


@pytest.mark.parametrize(("chunk_size", "chunk_overlap"), [(0, 0), (100, 100), (100, -1)])
def test_bad_sizes(chunk_size: int, chunk_overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_"):
        chunk_document(parse_document("x.md", "text"), chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def test_split_sections_without_headers() -> None:
    assert split_sections("one\n\ntwo\n") == [("", "one\n\ntwo")]


@pytest.mark.parametrize("path", sorted(RUNBOOKS.glob("*.md")), ids=lambda path: path.name)
def test_demo_runbooks_chunk_with_their_alerts(path: Path) -> None:
    doc = read_document(path)
    chunks = chunk_document(doc)
    sections = {c.section.split(" > ")[-1] for c in chunks}
    assert {"Symptoms", "Diagnosis", "Remediation", "Verification", "Escalation"} <= sections
    for chunk in chunks:
        assert all(name in chunk.embedding_text() for name in doc.alertnames)
