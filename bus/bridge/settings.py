"""Settings of the bridge process (`python -m bus.bridge`, `opswarm bridge`); environment prefix `OPSWARM_`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.config import KafkaConfig

DEFAULT_BRIDGE_PORT = 19096


class BridgeConfig(BaseModel):
    """Where the bridge listens and what it accepts (`OPSWARM_BRIDGE__*`)."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_BRIDGE_PORT, ge=0, lt=65536)
    # The bearer token senders must present (Alertmanager's http_config.authorization); None: no auth (loopback
    # development only; the local stack always sets one).
    token: SecretStr | None = None
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # How long one request may wait for Kafka's acknowledgements before answering 503 (the sender retries).
    publish_timeout_s: float = Field(default=5.0, gt=0)
    # Admission control: alerts being published at once (of admitted requests, until Kafka acknowledged them or
    # the request gave up). A request whose alerts do not fit is answered 503 "overloaded" at once, Retry-After.
    max_inflight_alerts: int = Field(default=50_000, gt=0)
    # How long a request's body may take to arrive once its headers did; then 408.
    body_timeout_s: float = Field(default=10.0, gt=0)
    # uvicorn: open connections (idle keep-alive ones too) past which it answers 503 itself (plain text,
    # "Connection: close"), before the app sees the request; a guard against running out of file descriptors.
    max_connections: int = Field(default=1000, gt=0)
    # The listening socket's queue of connections not yet accepted (the kernel caps it at net.core.somaxconn).
    backlog: int = Field(default=2048, gt=0)
    # How long an idle keep-alive connection stays open. Longer than a sender's pause between notifications, so
    # that the server seldom closes a connection just as the sender reuses it (a POST is not retried on that).
    keep_alive_s: int = Field(default=75, gt=0)


class BridgeSettings(BaseSettings):
    """Everything the bridge process needs; built in `bus.bridge.__main__` and passed down."""

    model_config = SettingsConfigDict(env_prefix="OPSWARM_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaConfig = KafkaConfig()
    bridge: BridgeConfig = BridgeConfig()
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level
