"""Settings of the knowledge process (environment prefix `OPSWARM_`, nesting with `__`)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from knowledge.dense_embedders import EmbeddingConfig
from knowledge.document_store import DEFAULT_COLLECTION as DEFAULT_DOCUMENTS_COLLECTION
from knowledge.incident_memory import DEFAULT_COLLECTION
from knowledge.llm_client import LlmConfig
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
    # Closed incidents for similarity and action statistics (lexical hashing vectors of this dimension).
    collection: str = Field(default=DEFAULT_COLLECTION, min_length=1)
    embedding_dimension: int = Field(default=DEFAULT_DIMENSION, ge=8, le=65536)
    # The knowledge base: runbooks, postmortems and closed incidents as chunks, dense vectors of `embedding`.
    documents_collection: str = Field(default=DEFAULT_DOCUMENTS_COLLECTION, min_length=1)
    embedding: EmbeddingConfig = EmbeddingConfig()
    # Coordination's incident records, read for the UI's incident pages and the postmortem drafts' timelines
    # (none: those pages say so, the drafts go without).
    mongo_url: SecretStr | None = SecretStr("mongodb://127.0.0.1:27027/")
    mongo_database: str = "opswarm"
    incidents_collection: str = "incidents"
    mongo_timeout_s: float = Field(default=10.0, gt=0)
    # Postmortem drafts of closed incidents, in the knowledge base: written by the model of `llm` when it has one
    # (OPSWARM_LLM__BASE_URL, OPSWARM_LLM__MODEL...), else from a template. Their consumer group is
    # `<consumer_group>-postmortems`; where it starts without committed offsets: "latest" does not draft the
    # topic's whole history (paying the model for each) the first time the group runs.
    postmortem_drafts: bool = True
    postmortem_consumer_start: Literal["earliest", "latest"] = "latest"
    llm: LlmConfig = LlmConfig()

    @model_validator(mode="after")
    def _require_qdrant(self) -> Self:
        if not self.qdrant_url and not self.qdrant_path:
            raise ValueError("set OPSWARM_QDRANT_URL (a Qdrant server) or OPSWARM_QDRANT_PATH (a local directory)")
        return self
