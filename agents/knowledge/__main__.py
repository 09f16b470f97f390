"""`python -m agents.knowledge`: the knowledge agent process."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.knowledge.service import build_consumer, opened_memory, run_knowledge
from agents.knowledge.settings import KnowledgeSettings
from scheduler.agent_main import run_agent_process


async def main(settings: KnowledgeSettings, stop: asyncio.Event, redis: Redis) -> None:
    async with opened_memory(settings) as memory:
        await run_knowledge(settings, stop, redis, memory, build_consumer(settings, memory))


if __name__ == "__main__":
    run_agent_process(KnowledgeSettings, main)
