"""What every agent process is configured with (environment prefix `OPSWARM_`, nesting with `__`).

Each agent subclasses `AgentSettings` with its own defaults and fields; its `__main__` builds that one settings
object and passes it down.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.config import KafkaConfig


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSWARM_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaConfig = KafkaConfig()
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")
    redis_prefix: str = "opswarm"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Stable per replica: it names the Kafka transactional id, which fences a zombie of the same replica.
    instance_id: str
    consumer_group: str
    # Where a consumer group without committed offsets starts. Production keeps "earliest" (nothing is missed);
    # tests with a group of their own use "latest" so they do not replay the topics' history.
    consumer_start: Literal["earliest", "latest"] = "earliest"
    heartbeat_every_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(default=20.0, gt=0)
    http_host: str = "127.0.0.1"
    # /healthz, /readyz, /metrics (and the agent's own routes); None turns the HTTP server off, 0 picks a free port.
    http_port: int | None = Field(default=None, ge=0, le=65535)
