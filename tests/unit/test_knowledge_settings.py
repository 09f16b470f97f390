"""The knowledge process's settings: its defaults, the environment it reads, and one Qdrant required."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agents.knowledge.settings import KnowledgeSettings


@pytest.fixture(autouse=True)
def _no_opswarm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPSWARM_QDRANT_PATH", "OPSWARM_QDRANT_URL", "OPSWARM_HTTP_PORT", "OPSWARM_COLLECTION"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = KnowledgeSettings()
    assert (settings.instance_id, settings.consumer_group, settings.http_port) == (
        "knowledge-0", "opswarm-knowledge", 9185
    )  # fmt: skip
    assert (settings.qdrant_path, settings.qdrant_url, settings.collection) == (
        ".opswarm/qdrant/knowledge", None, "incidents"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({"OPSWARM_QDRANT_PATH": "/var/lib/opswarm/qdrant"}, "qdrant_path", "/var/lib/opswarm/qdrant"),
        ({"OPSWARM_QDRANT_URL": "http://qdrant:6333"}, "qdrant_url", "http://qdrant:6333"),
        ({"OPSWARM_COLLECTION": "incidents_v2"}, "collection", "incidents_v2"),
        ({"OPSWARM_HTTP_PORT": "0"}, "http_port", 0),
    ],
)
def test_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, value: object) -> None:
    for name, text in env.items():
        monkeypatch.setenv(name, text)
    assert getattr(KnowledgeSettings(), field) == value


def test_the_postmortem_drafts_model_comes_from_opswarm_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPSWARM_LLM__BASE_URL", "OPSWARM_LLM__MODEL", "OPSWARM_LLM__MAX_WALL_S", "OPSWARM_POSTMORTEM_DRAFTS"):
        monkeypatch.delenv(name, raising=False)
    assert (KnowledgeSettings().llm.enabled, KnowledgeSettings().postmortem_drafts) == (False, True)
    monkeypatch.setenv("OPSWARM_LLM__BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("OPSWARM_LLM__MODEL", "local-model")
    monkeypatch.setenv("OPSWARM_LLM__MAX_WALL_S", "20")
    llm = KnowledgeSettings().llm
    assert (llm.base_url, llm.model, llm.max_wall_s) == ("http://127.0.0.1:8000/v1", "local-model", 20.0)
    monkeypatch.setenv("OPSWARM_LLM__BASE_URL", "ftp://nowhere")
    with pytest.raises(ValidationError, match="OPSWARM_LLM__BASE_URL must be an http"):
        KnowledgeSettings()


@pytest.mark.parametrize("path", [None, ""])
def test_a_qdrant_is_required(path: str | None) -> None:
    with pytest.raises(ValidationError, match="OPSWARM_QDRANT_URL"):
        KnowledgeSettings(qdrant_path=path, qdrant_url=None)
