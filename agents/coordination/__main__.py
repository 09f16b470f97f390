"""`python -m agents.coordination`: the coordination agent process."""

from __future__ import annotations

import asyncio

from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from agents.coordination.service import run_coordination
from agents.coordination.settings import CoordinationSettings
from bus.lifecycle import stop_on_signals
from bus.process_logging import configure_logging
from knowledge.incident_store import IncidentStore


async def main(settings: CoordinationSettings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=10,
        socket_connect_timeout=10,
    )
    timeout_ms = int(settings.mongo_timeout_s * 1000)
    mongo: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_url.get_secret_value(),
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
    )
    store = IncidentStore.in_database(
        mongo[settings.mongo_database],
        settings.incidents_collection,
        timeout_s=settings.mongo_timeout_s,
    )
    try:
        await run_coordination(settings, stop, redis, store)
    finally:
        await redis.aclose()
        await mongo.close()


if __name__ == "__main__":
    coordination_settings = CoordinationSettings()
    configure_logging(coordination_settings.log_level)
    asyncio.run(main(coordination_settings))
