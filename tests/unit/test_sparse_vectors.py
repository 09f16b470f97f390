"""Sparse lexical vectors: the pinned term indices (a stored format), sorted unique indices, BM25 saturation."""

from __future__ import annotations

import math
from dataclasses import asdict
from hashlib import blake2b

import pytest

from knowledge.sparse_vectors import (
    AVERAGE_DOCUMENT_TERMS,
    INDEX_SPACE,
    SparseTerms,
    document_terms,
    query_terms,
    term_index,
    tf_weight,
)
from knowledge.text_vectors import tokens
from tests.other_interpreters import outputs_with_hash_seeds

TEXTS = [
    "HighErrorRate on checkout-api after deploy v2.3: rollback_deployment checkout-api",
    "DiskFull on db-1: /var/log filled by debug logging; disk disk disk",
    "",
]
# Computed once: stored sparse vectors use these indices, so they must never change.
PINNED = {"higherrorrate": 374804924, "checkout-api": 1958113826, "disk": 1791864600}


@pytest.mark.parametrize(("term", "index"), sorted(PINNED.items()))
def test_term_indices_are_pinned(term: str, index: int) -> None:
    assert term_index(term) == index


def test_term_index_is_the_documented_hash() -> None:
    for term in ("error", "checkout-api", "ümlaut", "5xx"):
        digest = blake2b(term.encode(), digest_size=8, person=b"opswarm-sparse").digest()
        assert term_index(term) == int.from_bytes(digest, "big") % 2**31


def test_stable_across_processes_with_other_hash_seeds() -> None:
    script = (
        "import json, sys; from dataclasses import asdict; "
        "from knowledge.sparse_vectors import document_terms, query_terms; "
        "texts = json.loads(sys.argv[1]); "
        "print(json.dumps([[asdict(document_terms(t)), asdict(query_terms(t))] for t in texts]))"
    )
    elsewhere = outputs_with_hash_seeds(script, TEXTS)
    here = [[asdict(document_terms(t)), asdict(query_terms(t))] for t in TEXTS]
    assert elsewhere[0] == elsewhere[1] == here


@pytest.mark.parametrize("text", TEXTS[:2])
@pytest.mark.parametrize("terms_of", [document_terms, query_terms])
def test_indices_sorted_unique_in_range(text: str, terms_of) -> None:  # noqa: ANN001
    terms = terms_of(text)
    assert terms.indices == sorted(set(terms.indices))
    assert all(0 <= i < INDEX_SPACE for i in terms.indices)
    assert len(terms.indices) == len(terms.values) == len({term_index(t) for t in tokens(text)})
    assert all(v > 0 for v in terms.values)


def test_identifiers_match_whole_and_by_parts() -> None:
    document = document_terms("HighErrorRate fired on checkout-api")
    for query in ("HighErrorRate", "error rate", "checkout"):
        assert set(query_terms(query).indices) <= set(document.indices), query


@pytest.mark.parametrize("text", ["", "   ", "the of and", "!!! ???"])
@pytest.mark.parametrize("terms_of", [document_terms, query_terms])
def test_a_text_without_terms_is_empty(text: str, terms_of) -> None:  # noqa: ANN001
    assert terms_of(text) == SparseTerms(indices=[], values=[])


def test_query_weights_are_one_per_distinct_term() -> None:
    terms = query_terms("disk disk full disk")
    assert sorted(terms.indices) == sorted({term_index("disk"), term_index("full")})
    assert terms.values == [1.0, 1.0]


def test_document_weight_is_bm25_saturated_term_frequency() -> None:
    terms = document_terms("disk disk disk full")
    weights = dict(zip(terms.indices, terms.values, strict=True))
    norm = 1.2 * (1 - 0.75 + 0.75 * 4 / AVERAGE_DOCUMENT_TERMS)
    assert math.isclose(weights[term_index("disk")], 3 * 2.2 / (3 + norm), rel_tol=1e-12)
    assert math.isclose(weights[term_index("full")], 1 * 2.2 / (1 + norm), rel_tol=1e-12)


def test_term_frequency_saturates_monotonically() -> None:
    weights = [tf_weight(count, 150) for count in range(1, 200)]
    assert all(a < b for a, b in zip(weights, weights[1:], strict=False))
    steps = [b - a for a, b in zip(weights, weights[1:], strict=False)]
    assert all(a > b for a, b in zip(steps, steps[1:], strict=False))
    assert weights[-1] < 1.2 + 1  # bounded by k1 + 1


def test_longer_documents_weigh_a_term_less() -> None:
    assert tf_weight(2, 20) > tf_weight(2, 150) > tf_weight(2, 1000)
    assert math.isclose(tf_weight(1, int(AVERAGE_DOCUMENT_TERMS)), 1.0, rel_tol=1e-12)  # average length, once: 1


@pytest.mark.parametrize(
    ("indices", "values", "message"),
    [([2, 1], [1.0, 1.0], "sorted"), ([1, 1], [1.0, 1.0], "unique"), ([-1], [1.0], "lie in"),
     ([2**31], [1.0], "lie in"), ([1, 2], [1.0], "values")],
)  # fmt: skip
def test_sparse_terms_refuse_malformed_vectors(indices: list[int], values: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SparseTerms(indices=indices, values=values)
