"""`python -m agents.knowledge`: the knowledge agent process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from agents.knowledge.service import build_consumer, opened_stores, run_knowledge
from agents.knowledge.settings import KnowledgeSettings
from knowledge.incident_store import IncidentStore
from scheduler.agent_main import run_agent_process


@asynccontextmanager
async def incident_pages(settings: KnowledgeSettings) -> AsyncIterator[IncidentStore | None]:
    """Coordination's incident records, when a MongoDB is configured (the client connects lazily)."""
    if settings.mongo_url is None:
        yield None
        return
    timeout_ms = int(settings.mongo_timeout_s * 1000)
    mongo: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_url.get_secret_value(), serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        yield IncidentStore.in_database(
            mongo[settings.mongo_database], settings.incidents_collection, timeout_s=settings.mongo_timeout_s
        )
    finally:
        await mongo.close()


async def main(settings: KnowledgeSettings, stop: asyncio.Event, redis: Redis) -> None:
    async with opened_stores(settings) as stores, incident_pages(settings) as incidents:
        await run_knowledge(settings, stop, redis, stores, build_consumer(settings, stores), incidents)


if __name__ == "__main__":
    run_agent_process(KnowledgeSettings, main)
