"""Fixtures for tests on real services."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from bus.config import KafkaConfig
from knowledge.incident_store import IncidentStore
from scheduler.clock import ManualClock
from tests.integration.redis_keys import keys_under, redis_for


@pytest.fixture(scope="session")
def kafka_config(services) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=services.kafka_bootstrap, connect_timeout_s=30)


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
    client: AsyncMongoClient = AsyncMongoClient(services.mongo_url, serverSelectionTimeoutMS=5000)
    database = client["opswarm_tests"]
    name = f"incidents_{uuid.uuid4().hex[:8]}"
    store = IncidentStore.in_database(database, name)
    await store.ensure_indexes()
    try:
        yield store
    finally:
        await database[name].drop()
        await database[f"{name}_versions"].drop()
        await client.close()
