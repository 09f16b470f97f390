"""Settings of the diagnosis process (environment prefix `OPSWARM_`, nesting with `__`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from knowledge.llm_client import LlmConfig
from scheduler.agent_settings import AgentSettings


class DiagnosisSettings(AgentSettings):
    instance_id: str = "diagnosis-0"
    consumer_group: str = "opswarm-diagnosis"
    http_port: int | None = Field(default=9182, ge=0, le=65535)
    # The Prometheus server metric evidence comes from; None (or empty) means no metric evidence.
    prometheus_url: str | None = None
    prometheus_timeout_s: float = Field(default=5.0, gt=0)
    # Directories whose files the log adapter may read (JSON list in the environment).
    log_roots: list[str] = Field(default_factory=list)
    log_lines: int = Field(default=20, ge=1, le=500)
    log_timeout_s: float = Field(default=2.0, gt=0)
    knowledge_timeout_s: float = Field(default=5.0, gt=0)
    knowledge_k: int = Field(default=5, ge=1, le=100)
    # How far back a change of the service counts as recent.
    change_lookback_s: float = Field(default=3600.0, gt=0)
    changes_kept_per_service: int = Field(default=100, ge=1)
    changes_kept_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # A JSON playbook (a list of rules, or {"rules": [...]}): its rules are tried first, replacing same-named ones.
    playbook_file: str | None = None
    # The model of the LLM path (OPSWARM_LLM__BASE_URL, __MODEL, __API_KEY...); no base URL: deterministic only.
    llm: LlmConfig = LlmConfig()

    @field_validator("prometheus_url", "playbook_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value
