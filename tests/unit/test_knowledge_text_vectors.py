"""The hashing embedder: stable terms and vectors, unit length, lexical similarity ordering."""

from __future__ import annotations

import math

import pytest

from knowledge.text_vectors import HASHING_MODEL_ID, HashingEmbedder, tokens
from tests.other_interpreters import outputs_with_hash_seeds

TEXTS = [
    "ServiceDown on checkout-api (prod): process exited, restart_service checkout-api",
    "DiskFull on db-1: /var/log filled by debug logging",
    "HighErrorRate HTTPServer5xx after deploy v2.3",
]


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HighErrorRate", ["higherrorrate", "high", "error", "rate"]),
        ("checkout-api", ["checkout-api", "checkout", "api"]),
        ("restart_service", ["restart_service", "restart", "service"]),
        ("the pod is down", ["pod", "down"]),
        ("HTTPServer5xx", ["httpserver5xx", "http", "server", "5", "xx"]),
        ("", []),
    ],
)
def test_tokens(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


@pytest.mark.parametrize("text", TEXTS)
async def test_deterministic_across_instances(text: str) -> None:
    [first] = await HashingEmbedder().embed([text])
    [second] = await HashingEmbedder().embed([text])
    assert first == second


def test_stable_across_processes_with_other_hash_seeds() -> None:
    """blake2b, not Python's salted hash(): another interpreter computes the very same vectors."""
    script = "import json, sys; from knowledge.text_vectors import HashingEmbedder; " \
        "print(json.dumps([HashingEmbedder().vector(t) for t in json.loads(sys.argv[1])]))"  # fmt: skip
    elsewhere = outputs_with_hash_seeds(script, TEXTS)
    here = [HashingEmbedder().vector(t) for t in TEXTS]
    assert elsewhere[0] == elsewhere[1] == here


@pytest.mark.parametrize("dimension", [8, 64, 512, 1024])
@pytest.mark.parametrize("text", TEXTS)
async def test_unit_length_and_dimension(text: str, dimension: int) -> None:
    [vector] = await HashingEmbedder(dimension).embed([text])
    assert len(vector) == dimension
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)


@pytest.mark.parametrize("text", ["", "   ", "the of and", "!!! ???"])
def test_a_text_without_terms_is_all_zeros(text: str) -> None:
    assert HashingEmbedder(64).vector(text) == [0.0] * 64


@pytest.mark.parametrize(
    ("anchor", "similar", "unrelated"),
    [
        (
            "ServiceDown checkout-api process crashed, restarted the service",
            "ServiceDown on checkout-api: the process crashed again",
            "DiskFull on db-1, cleared old log files",
        ),
        (
            "DiskFull db-1 /var/log filled by debug logs; clear_disk /var/log",
            "disk full on db-1 because of debug logs",
            "HighLatency on cart after deploy v2, rolled back",
        ),
        (
            "HighErrorRate checkout after deploy v2.3, rollback_deployment checkout",
            "error rate high on checkout after a deploy",
            "certificate expiring on ingress",
        ),
    ],
)
async def test_similar_texts_are_closer_than_unrelated_ones(anchor: str, similar: str, unrelated: str) -> None:
    a, s, u = await HashingEmbedder().embed([anchor, similar, unrelated])
    assert _cosine(a, s) > _cosine(a, u)
    assert _cosine(a, s) > 0.3


def test_term_frequency_is_sublinear() -> None:
    """'disk' three times weighs 1 + ln 3 against 'full' once (the two terms land in different buckets here)."""
    embedder = HashingEmbedder()
    repeated, single = embedder.vector("disk disk disk full"), embedder.vector("disk full")
    heavy = 1 + math.log(3)
    assert math.isclose(_cosine(repeated, single), (heavy + 1) / (math.hypot(heavy, 1) * math.sqrt(2)), rel_tol=1e-9)


def test_model_id_and_smallest_dimension() -> None:
    assert HashingEmbedder(16).model_id == HASHING_MODEL_ID
    with pytest.raises(ValueError, match="at least 8"):
        HashingEmbedder(4)
