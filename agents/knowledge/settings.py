"""Settings of the knowledge process (environment prefix `OPSWARM_`, nesting with `__`)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from knowledge.incident_memory import DEFAULT_COLLECTION
from knowledge.text_vectors import DEFAULT_DIMENSION
from scheduler.agent_settings import AgentSettings


class KnowledgeSettings(AgentSettings):
    instance_id: str = "knowledge-0"
    consumer_group: str = "opswarm-knowledge"
    http_port: int | None = Field(default=9185, ge=0, le=65535)
    # Qdrant: a server URL when set, else the local directory (locked: only this process may open it).
    qdrant_path: str | None = ".opswarm/qdrant/knowledge"
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_timeout_s: float = Field(default=10.0, gt=0)
    collection: str = Field(default=DEFAULT_COLLECTION, min_length=1)
    embedding_dimension: int = Field(default=DEFAULT_DIMENSION, ge=8, le=65536)

    @model_validator(mode="after")
    def _require_qdrant(self) -> Self:
        if not self.qdrant_url and not self.qdrant_path:
            raise ValueError("set OPSWARM_QDRANT_URL (a Qdrant server) or OPSWARM_QDRANT_PATH (a local directory)")
        return self
