"""`python -m agents.coordination`: the coordination agent process."""

from __future__ import annotations

import asyncio

from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from agents.coordination.service import run_coordination
from agents.coordination.settings import CoordinationSettings
from knowledge.incident_store import IncidentStore
from scheduler.agent_main import run_agent_process


async def main(settings: CoordinationSettings, stop: asyncio.Event, redis: Redis) -> None:
    timeout_ms = int(settings.mongo_timeout_s * 1000)
    mongo: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_url.get_secret_value(), serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    store = IncidentStore.in_database(
        mongo[settings.mongo_database], settings.incidents_collection, timeout_s=settings.mongo_timeout_s
    )
    try:
        await run_coordination(settings, stop, redis, store)
    finally:
        await mongo.close()


if __name__ == "__main__":
    run_agent_process(CoordinationSettings, main)
