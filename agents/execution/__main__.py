"""`python -m agents.execution`: the execution agent process."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.execution.service import run_execution
from agents.execution.settings import ExecutionSettings
from bus.lifecycle import stop_on_signals
from bus.process_logging import configure_logging


async def main(settings: ExecutionSettings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    redis = Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=10, socket_connect_timeout=10)
    try:
        await run_execution(settings, stop, redis)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    execution_settings = ExecutionSettings()
    configure_logging(execution_settings.log_level)
    asyncio.run(main(execution_settings))
