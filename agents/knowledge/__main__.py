"""`python -m agents.knowledge`: the knowledge agent process."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.knowledge.service import build_consumer, opened_memory, run_knowledge
from agents.knowledge.settings import KnowledgeSettings
from bus.lifecycle import stop_on_signals
from bus.process_logging import configure_logging


async def main(settings: KnowledgeSettings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    redis = Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=10, socket_connect_timeout=10)
    try:
        async with opened_memory(settings) as memory:
            await run_knowledge(settings, stop, redis, memory, build_consumer(settings, memory))
    finally:
        await redis.aclose()


if __name__ == "__main__":
    knowledge_settings = KnowledgeSettings()
    configure_logging(knowledge_settings.log_level)
    asyncio.run(main(knowledge_settings))
