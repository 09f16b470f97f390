"""Connection settings for Kafka, shared by every process that talks to the bus.

A process builds its own pydantic-settings `Settings` in `__main__` and nests a `KafkaConfig` in it.
"""

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:19092"


class KafkaConfig(BaseModel):
    """How to reach Kafka and how hard to wait for it."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    client_id_prefix: str = "opswarm"
    request_timeout_s: float = Field(default=30.0, gt=0)
    # Upper bound for one publish to be acknowledged by every in-sync replica.
    publish_timeout_s: float = Field(default=15.0, gt=0)
    # How long a consumer's transaction may stay open (the broker caps it, 15 min by default): it spans the
    # handling of a batch, which for execution includes running an action.
    transaction_timeout_s: float = Field(default=900.0, gt=0, le=900)
    # Upper bound for the connection/metadata handshake when a client starts.
    connect_timeout_s: float = Field(default=20.0, gt=0)
