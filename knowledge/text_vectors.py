"""Text to vectors: the `Embedder` the knowledge store depends on, and a lexical one that needs no model.

`HashingEmbedder` is a feature-hashing term-frequency vector: words (and identifiers such as alert names, with
their camelCase and dash-separated parts) are hashed with blake2b into a fixed number of signed buckets,
weighted with sublinear term frequency (1 + ln tf) and L2-normalised, so cosine similarity is lexical overlap.
The hash is keyed by a fixed personalisation string, hence stable across processes and Python versions. A dense
sentence embedder replaces it later behind the same `Embedder` protocol; the store records `model_id` and
`dimension` so that vectors of two embedders never share a collection.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Protocol

HASHING_MODEL_ID = "hashing-tf-blake2b-v1"
DEFAULT_DIMENSION = 512

# An identifier: alphanumeric runs joined by - _ . (e.g. "checkout-api", "restart_service", "v1.2").
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*")
# The words of an identifier: "HighErrorRate" -> High Error Rate, "HTTPServer5xx" -> HTTP Server 5 xx.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_STOP_WORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were with".split()
)
_PERSON = b"opswarm-tf"


class Embedder(Protocol):
    """Turns texts into vectors of `dimension` floats; `model_id` names the recipe, so stores can check it."""

    @property
    def dimension(self) -> int: ...

    @property
    def model_id(self) -> str: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def tokens(text: str) -> list[str]:
    """The lower-case terms of a text: each identifier whole, plus its words when it has several; no stop words."""
    found: list[str] = []
    for match in _IDENTIFIER.finditer(text):
        identifier = match.group()
        words = [w.lower() for w in _WORD.findall(identifier)]
        whole = identifier.lower()
        if whole not in _STOP_WORDS:
            found.append(whole)
        if len(words) > 1:
            found.extend(w for w in words if w not in _STOP_WORDS)
    return found


@dataclass(frozen=True)
class HashingEmbedder:
    """Signed feature hashing of sublinear term frequencies, L2-normalised (a text without terms is all zeros)."""

    dimension: int = DEFAULT_DIMENSION
    model_id: str = field(default=HASHING_MODEL_ID, init=False)

    def __post_init__(self) -> None:
        if self.dimension < 8:
            raise ValueError(f"dimension must be at least 8, not {self.dimension}")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(text) for text in texts]

    def vector(self, text: str) -> list[float]:
        values = [0.0] * self.dimension
        for term, count in Counter(tokens(text)).items():
            bucket, sign = self._slot(term)
            values[bucket] += sign * (1.0 + math.log(count))
        norm = math.sqrt(sum(v * v for v in values))
        return values if norm == 0.0 else [v / norm for v in values]

    def _slot(self, term: str) -> tuple[int, float]:
        digest = int.from_bytes(blake2b(term.encode(), digest_size=8, person=_PERSON).digest(), "big")
        return digest % self.dimension, (1.0 if digest >> 63 else -1.0)
