"""Settings of the `opswarm` CLI process: where the local stack lives, its ports, and how clients reach each service.

Read once in `deploy.cli.main` from the environment (prefix `OPSWARM_`, nesting with `__`, e.g.
`OPSWARM_STACK__KAFKA_PORT=29092`) and passed down. Client addresses that are not set explicitly are derived from
the stack's ports, so moving a port moves both the launcher and the clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.bridge.settings import BridgeConfig
from bus.config import KafkaConfig
from knowledge.dense_embedders import EmbeddingConfig
from knowledge.llm_client import LlmConfig
from scheduler.escalations.access_tokens import ApiToken

# The checkout this package runs from: set-up puts per-checkout tools (classpath, binaries) under it.
CHECKOUT_DIR = Path(__file__).resolve().parent.parent


class StackSettings(BaseModel):
    """The local stack's processes: ports they listen on (127.0.0.1 only) and how hard to wait for them."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    kafka_port: int = Field(default=19092, gt=0, lt=65536)
    kafka_controller_port: int = Field(default=19093, gt=0, lt=65536)
    redis_port: int = Field(default=16379, gt=0, lt=65536)
    mongo_port: int = Field(default=27027, gt=0, lt=65536)
    prometheus_port: int = Field(default=19090, gt=0, lt=65536)
    # Not 19093: that is Kafka's controller. No gossip port: the stack's Alertmanager runs without a cluster.
    alertmanager_port: int = Field(default=19095, gt=0, lt=65536)
    kafka_heap: str = Field(default="512m", pattern=r"^[0-9]+[kmg]$")
    java: str = "java"
    redis_server: str = "redis-server"
    prometheus: str = "/usr/bin/prometheus"
    alertmanager: str = "/usr/bin/prometheus-alertmanager"
    # How long `up` waits for a component to answer a real client, and `down` for it to exit after SIGTERM.
    ready_timeout_s: float = Field(default=90.0, gt=0)
    stop_timeout_s: float = Field(default=20.0, gt=0)


class Settings(BaseSettings):
    """Everything the CLI process needs; nothing else reads the environment."""

    model_config = SettingsConfigDict(env_prefix="OPSWARM_", env_nested_delimiter="__", extra="ignore")

    state_dir: Path = Path(".opswarm")
    tools_dir: Path = CHECKOUT_DIR / ".opswarm" / "tools"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    stack: StackSettings = StackSettings()
    kafka: KafkaConfig = KafkaConfig()
    # The alert bridge (Alertmanager's webhook receiver) the stack runs; without a token the stack generates one
    # into <state_dir>/bridge/token (deploy.localstack.bridge_token).
    bridge: BridgeConfig = BridgeConfig()
    # URLs may carry credentials, hence secret; derived from the stack's ports when not set.
    redis_url: SecretStr | None = None
    mongo_url: SecretStr | None = None
    # Qdrant: local path mode (default: <state_dir>/qdrant) unless a server URL is given.
    qdrant_path: Path | None = None
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    # The knowledge base's dense embedder (the agents get the same: vectors of two models never mix).
    embedding: EmbeddingConfig = EmbeddingConfig()
    # The model of LLM diagnosis and postmortem drafts (OPSWARM_LLM__BASE_URL...), given to the agents; none: the
    # deterministic path.
    llm: LlmConfig = LlmConfig()
    # Escalations, given to coordination: the policy file (YAML or TOML), API tokens besides the local operator's
    # (generated under <state_dir>/approvals), and the key of approval links (generated there when not set).
    escalation_policy_file: Path | None = None
    api_tokens: list[ApiToken] = Field(default_factory=list)
    link_secret: SecretStr | None = None
    # The knowledge agent's HTTP API, for `opswarm kb`; default: the local swarm's knowledge agent.
    knowledge_url: str | None = None
    # Where the swarm keeps its state: Redis key prefix, MongoDB database and incident collection.
    redis_prefix: str = "opswarm"
    mongo_database: str = "opswarm"
    incidents_collection: str = "incidents"
    # Upper bound for each round trip of `opswarm doctor`.
    doctor_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("state_dir", "tools_dir", "qdrant_path")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _derive_addresses(self) -> Self:
        host = self.stack.host
        if "bootstrap_servers" not in self.kafka.model_fields_set:
            self.kafka = self.kafka.model_copy(update={"bootstrap_servers": f"{host}:{self.stack.kafka_port}"})
        if self.redis_url is None:
            self.redis_url = SecretStr(f"redis://{host}:{self.stack.redis_port}/0")
        if self.mongo_url is None:
            self.mongo_url = SecretStr(f"mongodb://{host}:{self.stack.mongo_port}/")
        if self.qdrant_path is None:
            self.qdrant_path = self.state_dir / "qdrant"
        return self

    # The validator above fills these; the accessors give their plain values without `| None`.
    def redis_dsn(self) -> str:
        assert self.redis_url is not None
        return self.redis_url.get_secret_value()

    def mongo_dsn(self) -> str:
        assert self.mongo_url is not None
        return self.mongo_url.get_secret_value()

    def qdrant_dir(self) -> Path:
        assert self.qdrant_path is not None
        return self.qdrant_path

    def prometheus_url(self) -> str:
        """The local stack's Prometheus (its HTTP API and UI)."""
        return f"http://{self.stack.host}:{self.stack.prometheus_port}"

    def alertmanager_url(self) -> str:
        """The local stack's Alertmanager (its HTTP API and UI)."""
        return f"http://{self.stack.host}:{self.stack.alertmanager_port}"

    def bridge_url(self) -> str:
        """The alert bridge: Alertmanager posts to `<bridge_url>/alertmanager`."""
        return f"http://{self.bridge.host}:{self.bridge.port}"

    def targets_dir(self) -> Path:
        """The process supervisor's state: the target processes the execution agent may restart."""
        return self.state_dir / "targets"

    def deployments_dir(self) -> Path:
        """The local deployment platform's releases (what rollback_deploy and scale act on)."""
        return self.state_dir / "deployments"

    def scenarios_dir(self) -> Path:
        """Scenario targets' data directories: the one root clear_disk may delete in by default."""
        return self.state_dir / "scenarios"
