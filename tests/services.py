"""The real services the tests talk to: containers when a Docker engine answers, otherwise the local stack.

`OPSWARM_TEST_STACK=local` forces the local stack even when Docker is available.
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from deploy.settings import Settings

KAFKA_IMAGE = "apache/kafka:4.1.1"
REDIS_IMAGE = "redis:7"
MONGO_IMAGE = "mongo:7"
QDRANT_IMAGE = "qdrant/qdrant:v1.16.2"


DEFAULT_DOCKER_SOCKET = Path("/var/run/docker.sock")


class SuiteSettings(Settings):
    """The test process's settings: the CLI's settings plus how to choose the services."""

    test_stack: Literal["auto", "local"] = "auto"
    # Docker's own variable (no OPSWARM_ prefix); when unset, the engine is the default socket.
    docker_host: str | None = Field(default=None, validation_alias="DOCKER_HOST")


@dataclass(frozen=True)
class ServiceEndpoints:
    kafka_bootstrap: str
    redis_url: str
    mongo_url: str
    qdrant_path: Path | None
    qdrant_url: str | None

    def settings(self, base: Settings) -> Settings:
        """`base` with its client addresses pointed at these endpoints (for code that takes Settings)."""
        return base.model_copy(
            update={
                "kafka": base.kafka.model_copy(update={"bootstrap_servers": self.kafka_bootstrap}),
                "redis_url": SecretStr(self.redis_url),
                "mongo_url": SecretStr(self.mongo_url),
                "qdrant_path": self.qdrant_path,
                "qdrant_url": self.qdrant_url,
            }
        )


def local_stack_endpoints(settings: Settings) -> ServiceEndpoints:
    return ServiceEndpoints(
        kafka_bootstrap=settings.kafka.bootstrap_servers,
        redis_url=settings.redis_dsn(),
        mongo_url=settings.mongo_dsn(),
        qdrant_path=settings.qdrant_dir(),
        qdrant_url=settings.qdrant_url,
    )


def docker_engine_answers(settings: SuiteSettings) -> bool:
    if settings.docker_host is None and not DEFAULT_DOCKER_SOCKET.exists():
        return False  # asking the SDK anyway would leak its socket (a ResourceWarning) to learn the same
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no SDK, no socket, no daemon: all mean "use the local stack"
        return False


def start_containers(stack: ExitStack) -> ServiceEndpoints:
    """Start Kafka (KRaft), Redis, MongoDB and Qdrant containers; `stack` stops them."""
    from testcontainers.community.mongodb import MongoDbContainer
    from testcontainers.community.qdrant import QdrantContainer
    from testcontainers.community.redis import RedisContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    # testcontainers' KafkaContainer drives Confluent images only; the Apache image is configured by env.
    # The advertised listener must name the host port, so it is chosen up front and mapped 1:1.
    host = DockerClient().host()
    port = free_tcp_port()
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS=f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_INTER_BROKER_LISTENER_NAME="PLAINTEXT",
            KAFKA_NUM_PARTITIONS="3",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        )
        .waiting_for(LogMessageWaitStrategy("Kafka Server started"))
    )
    redis = RedisContainer(REDIS_IMAGE)
    mongo = MongoDbContainer(MONGO_IMAGE)
    qdrant = QdrantContainer(QDRANT_IMAGE)
    for container in (kafka, redis, mongo, qdrant):
        stack.enter_context(container)
    return ServiceEndpoints(
        kafka_bootstrap=f"{host}:{port}",
        redis_url=f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(redis.port)}/0",
        mongo_url=mongo.get_connection_url(),
        qdrant_path=None,
        qdrant_url=f"http://{qdrant.rest_host_address}",
    )


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def free_tcp_port() -> int:
    """A port nothing uses now, never the same twice in a session.

    Picked below the kernel's ephemeral range: a port from that range can be taken by any outgoing client
    connection between this pick and the server binding it.
    """
    ephemeral_low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    candidates = list(range(max(1024, ephemeral_low - 12000), ephemeral_low))
    random.shuffle(candidates)
    for port in candidates:
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise AssertionError(f"no free TCP port below {ephemeral_low}")
