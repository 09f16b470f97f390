"""Connection settings for Kafka, shared by every process that talks to the bus.

A process builds its own pydantic-settings `Settings` in `__main__` and nests a `KafkaConfig` in it.
"""

from pydantic import BaseModel, ConfigDict, Field

from bus.topics import TopicSpec

DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:19092"


class KafkaConfig(BaseModel):
    """How to reach Kafka and how hard to wait for it."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = DEFAULT_BOOTSTRAP_SERVERS
    client_id_prefix: str = "opswarm"
    # Topics of a namespace are the registry's names behind "<namespace>.", so that several swarms (a developer's,
    # an end-to-end run's, a test session's) share one broker without reading each other's events. Empty: the
    # registry's names as they are.
    topic_namespace: str = Field(default="", pattern=r"^([a-z0-9][a-z0-9_-]{0,62})?$")
    request_timeout_s: float = Field(default=30.0, gt=0)
    # Upper bound for one publish to be acknowledged by every in-sync replica.
    publish_timeout_s: float = Field(default=15.0, gt=0)
    # How long a consumer's transaction may stay open (the broker caps it, 15 min by default): it spans the
    # handling of a batch, which for execution includes running an action.
    transaction_timeout_s: float = Field(default=900.0, gt=0, le=900)
    # Upper bound for the connection/metadata handshake when a client starts.
    connect_timeout_s: float = Field(default=20.0, gt=0)

    def topic(self, spec: TopicSpec) -> str:
        """The name a registry topic has on the broker in this namespace.

        The rule throughout the bus: a `TopicSpec` is a registry topic and is placed in the namespace here; a
        `str` is already a broker's topic name and is used as it is.
        """
        return f"{self.topic_namespace}.{spec.name}" if self.topic_namespace else spec.name
