"""What every agent's `__main__` does: build its settings, set up logging, stop on signals, open Redis, run.

    if __name__ == "__main__":
        run_agent_process(MonitoringSettings, run_monitoring)

`body(settings, stop, redis)` runs the agent until `stop` is set; Redis is closed after it, whatever happens.
The process runs on uvloop (a libuv event loop): an agent spends most of its CPU in the loop and the Kafka
client's I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop
from redis.asyncio import Redis

from bus.lifecycle import stop_on_signals, tune_collector_for_throughput
from bus.process_logging import configure_logging
from scheduler.agent_settings import AgentSettings

SettingsT = TypeVar("SettingsT", bound=AgentSettings)
REDIS_TIMEOUT_S = 10.0

AgentBody = Callable[[SettingsT, asyncio.Event, Redis], Awaitable[None]]


def run_agent_process(settings_cls: type[SettingsT], body: AgentBody[SettingsT]) -> None:
    settings = settings_cls()
    configure_logging(settings.log_level)
    tune_collector_for_throughput()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main(settings, body))


async def _main(settings: SettingsT, body: AgentBody[SettingsT]) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    try:
        await body(settings, stop, redis)
    finally:
        await redis.aclose()
