"""Sparse lexical vectors for Qdrant sparse vectors with the IDF modifier (a BM25 split across writer and server).

A term is `knowledge.text_vectors.tokens` (lower-case words and identifiers, an identifier such as HighErrorRate
both whole and by its parts), its index a 31-bit blake2b hash (`term_index`). A document carries BM25's
saturated term frequency per term; a query carries 1.0 per distinct term. Qdrant, with `Modifier.IDF` on the
sparse vector, multiplies each query term by the collection's inverse document frequency at query time, so the
dot product it ranks by is BM25: sum over shared terms of idf(t) * tf_weight(t, d).

The document-length normalisation uses a fixed average document length (`AVERAGE_DOCUMENT_TERMS`) rather than
the collection's running average: with the running average every stored vector would have to be re-weighted
whenever the corpus grows, and two writers would weight the same text differently. With a constant, a text's
vector is a pure function of the text, reproducible in any process. The value is the order of an incident
summary or a runbook section; BM25 is not sensitive to it within a factor of two.

The index is part of the stored format: changing `_PERSON`, the byte order or the modulus makes old vectors
unmatchable, so it is pinned by unit tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b

from knowledge.text_vectors import tokens

K1 = 1.2
B = 0.75
AVERAGE_DOCUMENT_TERMS = 150.0
INDEX_SPACE = 2**31
_PERSON = b"opswarm-sparse"


@dataclass(frozen=True)
class SparseTerms:
    """A sparse vector: `indices` sorted ascending and unique, each in [0, 2**31); `values` aligned with them."""

    indices: list[int]
    values: list[float]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise ValueError(f"{len(self.indices)} indices but {len(self.values)} values")
        if any(not 0 <= i < INDEX_SPACE for i in self.indices):
            raise ValueError("sparse indices must lie in [0, 2**31)")
        if any(a >= b for a, b in zip(self.indices, self.indices[1:], strict=False)):
            raise ValueError("sparse indices must be sorted ascending and unique")

    def __len__(self) -> int:
        return len(self.indices)


def term_index(term: str) -> int:
    """The stable index of a term: blake2b(digest_size=8, person=b"opswarm-sparse") read big-endian, mod 2**31."""
    digest = blake2b(term.encode("utf-8"), digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") % INDEX_SPACE


def tf_weight(count: int, length: int) -> float:
    """BM25's saturated term frequency of a term seen `count` times in a document of `length` terms."""
    norm = K1 * (1.0 - B + B * length / AVERAGE_DOCUMENT_TERMS)
    return count * (K1 + 1.0) / (count + norm)


def document_terms(text: str) -> SparseTerms:
    """The sparse vector to store for a document: a saturated, length-normalised term frequency per term."""
    terms = tokens(text)
    length = len(terms)
    return _collect((term, tf_weight(count, length)) for term, count in Counter(terms).items())


def query_terms(text: str) -> SparseTerms:
    """The sparse vector to search with: 1.0 per distinct term (Qdrant supplies the IDF)."""
    return _collect((term, 1.0) for term in dict.fromkeys(tokens(text)))


def _collect(weighted: Iterable[tuple[str, float]]) -> SparseTerms:
    """Index the terms, summing the weights of terms whose indices collide; indices sorted ascending."""
    by_index: dict[int, float] = {}
    for term, weight in weighted:
        index = term_index(term)
        by_index[index] = by_index.get(index, 0.0) + weight
    indices = sorted(by_index)
    return SparseTerms(indices=indices, values=[by_index[i] for i in indices])
