"""Settings of the monitoring process (environment prefix `OPSWARM_`, nesting with `__`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.config import KafkaConfig


class MonitoringSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSWARM_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaConfig = KafkaConfig()
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")
    redis_prefix: str = "opswarm"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Stable per replica: it names the Kafka transactional id, which fences a zombie of the same replica.
    instance_id: str = "monitoring-0"
    consumer_group: str = "opswarm-monitoring"
    correlation_window_s: float = Field(default=300.0, gt=0)
    dedup_window_s: float = Field(default=60.0, gt=0)
    flap_threshold: int = Field(default=4, ge=2)
    flap_window_s: float = Field(default=600.0, gt=0)
    heartbeat_every_s: float = Field(default=5.0, gt=0)
    heartbeat_ttl_s: float = Field(default=20.0, gt=0)
