"""Fixtures for tests on real services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient
from redis.asyncio import Redis

from bus.admin import delete_namespace, ensure_topics
from bus.config import KafkaConfig
from knowledge.incident_store import IncidentStore
from scheduler.clock import ManualClock
from tests.integration.redis_keys import keys_under, redis_for
from tests.scratch_incidents import scratch_incident_store


@pytest.fixture(scope="session")
async def kafka_config(services) -> AsyncIterator[KafkaConfig]:
    """The bus in a topic namespace of this test session's own: a swarm running on the same broker never sees
    the tests' events, and the tests never see its events or an earlier session's. Its topics are deleted
    afterwards."""
    config = KafkaConfig(
        bootstrap_servers=services.kafka_bootstrap, connect_timeout_s=30, topic_namespace=f"test-{uuid.uuid4().hex[:8]}"
    )
    await ensure_topics(config)
    try:
        yield config
    finally:
        await delete_namespace(config)


@pytest.fixture(scope="session")
async def redis_client(services) -> AsyncIterator[Redis]:
    client = redis_for(services)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def key_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix of the test's own; exactly the keys under it are deleted afterwards."""
    prefix = f"opswarm-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = await keys_under(redis_client, prefix)
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def incident_store(services) -> AsyncIterator[IncidentStore]:
    """An incident store in collections of the test's own, dropped afterwards."""
    async with scratch_incident_store(services.mongo_url) as store:
        yield store


@pytest.fixture
async def local_qdrant(tmp_path: Path) -> AsyncIterator[AsyncQdrantClient]:
    """Qdrant in local mode in the test's own directory."""
    qdrant = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
    try:
        yield qdrant
    finally:
        await qdrant.close()
