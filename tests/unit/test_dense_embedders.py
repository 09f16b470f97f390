"""Dense embedders, the parts without a model or a server: configuration, file hashes, model ids, `hashing`."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from knowledge import dense_embedders
from knowledge.dense_embedders import (
    UPSTREAM_SHA256,
    EmbedderUnavailable,
    EmbeddingConfig,
    cpu_flags,
    cpu_has_native_bf16,
    local_model_id,
    open_embedder,
    resolve_precision,
    sha256_of,
    verify_model_files,
    weights_digest,
)
from knowledge.text_vectors import HASHING_MODEL_ID, HashingEmbedder

REPO = Path(__file__).resolve().parents[2]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def model_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A directory with two files (one in a subdirectory) and their hash map."""
    directory = tmp_path / "my-model"
    (directory / "1_Pooling").mkdir(parents=True)
    files = {"vocab.txt": b"[PAD]\n[UNK]\nerror\n", "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory, {name: _sha(data) for name, data in files.items()}


def test_defaults() -> None:
    config = EmbeddingConfig()
    assert (config.backend, config.model_path, config.batch_size, config.timeout_s) == ("local", None, 32, 30.0)
    assert config.precision == "auto"
    assert config.expected_sha256 == dict(UPSTREAM_SHA256)
    assert config.expected_sha256["model.safetensors"].startswith("53aa51172d14")
    assert set(config.expected_sha256) == {"model.safetensors", "tokenizer.json", "vocab.txt", "config.json"}
    assert (config.openai_base_url, config.openai_model, config.openai_api_key, config.dimension) == (
        None, "text-embedding-3-small", None, None
    )  # fmt: skip


def test_the_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        EmbeddingConfig().batch_size = 8  # type: ignore[misc]


@pytest.mark.parametrize("model_path", [Path("/models/other"), None])
def test_an_empty_hash_map_is_refused_for_a_local_model(model_path: Path | None) -> None:
    with pytest.raises(ValidationError, match="unverified weights are not loaded"):
        EmbeddingConfig(model_path=model_path, expected_sha256={})


def test_an_empty_hash_map_is_fine_for_other_backends() -> None:
    assert EmbeddingConfig(backend="openai", model_path=Path("/m"), expected_sha256={}).backend == "openai"


def test_a_custom_model_path_with_its_own_hashes() -> None:
    digest = "AB" * 32
    config = EmbeddingConfig(model_path=Path("/models/other"), expected_sha256={"model.safetensors": digest})
    assert config.expected_sha256 == {"model.safetensors": "ab" * 32}  # normalised to lower case


@pytest.mark.parametrize(
    ("name", "digest", "message"),
    [
        ("model.safetensors", "abc", "not a sha256"),
        ("model.safetensors", "g" * 64, "not a sha256"),
        ("../model.safetensors", "a" * 64, "not a relative path"),
        ("/etc/passwd", "a" * 64, "not a relative path"),
        ("", "a" * 64, "not a relative path"),
    ],
)
def test_malformed_hash_maps_are_refused(name: str, digest: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EmbeddingConfig(model_path=Path("/m"), expected_sha256={name: digest})


@pytest.mark.parametrize(
    "fields",
    [{"batch_size": 0}, {"timeout_s": 0}, {"dimension": 0}, {"backend": "hashing", "dimension": 4},
     {"backend": "onnx"}, {"precision": "float16"}],
)  # fmt: skip
def test_invalid_values_are_refused(fields: dict) -> None:
    with pytest.raises(ValidationError):
        EmbeddingConfig(**fields)


def test_the_environment_shape_of_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nested in the process settings as `embedding`: OPSWARM_EMBEDDING__* variables, the hash map as JSON."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class Settings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="OPSWARM_", env_nested_delimiter="__")
        embedding: EmbeddingConfig = EmbeddingConfig()

    monkeypatch.setenv("OPSWARM_EMBEDDING__BACKEND", "openai")
    monkeypatch.setenv("OPSWARM_EMBEDDING__OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("OPSWARM_EMBEDDING__DIMENSION", "256")
    monkeypatch.setenv("OPSWARM_EMBEDDING__PRECISION", "float32")
    monkeypatch.setenv("OPSWARM_EMBEDDING__EXPECTED_SHA256", '{"model.safetensors": "' + "c" * 64 + '"}')
    embedding = Settings().embedding
    assert (embedding.backend, embedding.openai_base_url, embedding.dimension) == (
        "openai", "http://127.0.0.1:8000/v1", 256
    )  # fmt: skip
    assert embedding.expected_sha256 == {"model.safetensors": "c" * 64}
    assert embedding.precision == "float32"


def test_sha256_of_a_file_larger_than_a_chunk(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # 2.2 MiB: several chunks
    (tmp_path / "blob").write_bytes(data)
    assert sha256_of(tmp_path / "blob") == _sha(data)


def test_verify_accepts_matching_files(model_dir: tuple[Path, dict[str, str]]) -> None:
    directory, expected = model_dir
    verify_model_files(directory, expected)
    verify_model_files(directory, {name: digest.upper() for name, digest in expected.items()})


def test_verify_refuses_a_changed_file_naming_it(model_dir: tuple[Path, dict[str, str]]) -> None:
    directory, expected = model_dir
    path = directory / "vocab.txt"
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(EmbedderUnavailable, match=r"model file vocab\.txt in .*my-model has sha256 [0-9a-f]{64}"):
        verify_model_files(directory, expected)


def test_verify_refuses_a_missing_file_naming_it(model_dir: tuple[Path, dict[str, str]]) -> None:
    directory, expected = model_dir
    (directory / "1_Pooling" / "config.json").unlink()
    with pytest.raises(EmbedderUnavailable, match=r"model file 1_Pooling/config\.json is missing"):
        verify_model_files(directory, expected)


def test_verify_refuses_a_directory_in_place_of_a_file(model_dir: tuple[Path, dict[str, str]]) -> None:
    directory, _ = model_dir
    with pytest.raises(EmbedderUnavailable, match="model file 1_Pooling is missing"):
        verify_model_files(directory, {"1_Pooling": "a" * 64})


def test_verify_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match="does not exist.*OPSWARM_EMBEDDING__MODEL_PATH"):
        verify_model_files(tmp_path / "nowhere", {"vocab.txt": "a" * 64})


def test_weights_digest() -> None:
    assert weights_digest(UPSTREAM_SHA256) == UPSTREAM_SHA256["model.safetensors"]
    assert weights_digest({"pytorch_model.bin": "b" * 64, "vocab.txt": "c" * 64}) == "b" * 64
    without_weights = weights_digest({"model.onnx": "d" * 64})
    assert len(without_weights) == 64 and without_weights != "d" * 64
    assert weights_digest({"a": "1" * 64, "b": "2" * 64}) == weights_digest({"b": "2" * 64, "a": "1" * 64})


def test_model_ids() -> None:
    packaged = local_model_id(EmbeddingConfig(), Path("/site-packages/model"))
    assert packaged == "sentence-transformers/all-MiniLM-L6-v2@53aa51172d14"
    custom = EmbeddingConfig(model_path=Path("/models/minilm-copy"), expected_sha256={"model.safetensors": "e" * 64})
    assert local_model_id(custom, Path("/models/minilm-copy")) == "local:minilm-copy@eeeeeeeeeeee"
    # bfloat16 vectors differ slightly from float32's: another model id, so a collection is re-embedded, not mixed.
    assert local_model_id(EmbeddingConfig(), Path("/m"), "bfloat16") == f"{packaged}+bf16"
    assert local_model_id(custom, Path("/models/minilm-copy"), "bfloat16") == "local:minilm-copy@eeeeeeeeeeee+bf16"
    assert local_model_id(EmbeddingConfig(), Path("/m"), "float32") == packaged


CPUINFO_BF16 = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512_bf16 avx512_vnni
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""
CPUINFO_AMX = "processor\t: 0\nflags\t\t: sse2 avx2 amx_tile amx_bf16 amx_int8\n"
CPUINFO_PLAIN = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\nmodel name\t: bf16 avx512_bf16 in a name\n"
CPUINFO_ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"), [(CPUINFO_BF16, True), (CPUINFO_AMX, True), (CPUINFO_PLAIN, False), (CPUINFO_ARM, False),
                            ("", False)],
)  # fmt: skip
def test_native_bf16_from_cpu_flags(cpuinfo: str, native: bool) -> None:
    flags = cpu_flags(cpuinfo)
    assert bool(flags & dense_embedders.BF16_CPU_FLAGS) is native
    assert resolve_precision("auto", native) == ("bfloat16" if native else "float32")


def test_cpu_flags_reads_only_flags_lines() -> None:
    assert cpu_flags(CPUINFO_PLAIN) == {"fpu", "sse", "sse2", "avx", "avx2", "fma"}
    assert "bugs" not in cpu_flags(CPUINFO_BF16) and "spectre_v1" not in cpu_flags(CPUINFO_BF16)


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_precision_wins_over_the_cpu(native: bool) -> None:
    assert resolve_precision("float32", native) == "float32"
    assert resolve_precision("bfloat16", native) == "bfloat16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("float16", native)


def test_this_machines_cpuinfo_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_has_native_bf16.cache_clear()
    reads: list[Path] = []
    original = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting)
    try:
        first = cpu_has_native_bf16()
        assert cpu_has_native_bf16() is first
    finally:
        cpu_has_native_bf16.cache_clear()
    assert reads == [Path("/proc/cpuinfo")]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        assert first is bool(cpu_flags(original(cpuinfo)) & dense_embedders.BF16_CPU_FLAGS)


async def test_the_hashing_backend() -> None:
    default = await open_embedder(EmbeddingConfig(backend="hashing"))
    sized = await open_embedder(EmbeddingConfig(backend="hashing", dimension=64))
    assert isinstance(default, HashingEmbedder) and (default.dimension, default.model_id) == (512, HASHING_MODEL_ID)
    assert sized.dimension == 64 and len((await sized.embed(["DiskFull on db-1"]))[0]) == 64


async def test_a_refused_local_model_is_refused_before_loading(model_dir: tuple[Path, dict[str, str]]) -> None:
    directory, expected = model_dir
    (directory / "vocab.txt").write_bytes(b"changed")
    with pytest.raises(EmbedderUnavailable, match=r"vocab\.txt"):
        await open_embedder(EmbeddingConfig(model_path=directory, expected_sha256=expected))


def test_importing_the_module_does_not_import_torch() -> None:
    script = (
        "import sys, knowledge.dense_embedders, knowledge.openai_embedder; "
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, check=True, text=True)
    assert out.stdout.strip() == "[]"
