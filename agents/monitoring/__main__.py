"""`python -m agents.monitoring`: the monitoring agent process."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.monitoring.service import run_monitoring
from agents.monitoring.settings import MonitoringSettings
from bus.lifecycle import stop_on_signals
from bus.process_logging import configure_logging


async def main(settings: MonitoringSettings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    redis = Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=10, socket_connect_timeout=10)
    try:
        await run_monitoring(settings, stop, redis)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    monitoring_settings = MonitoringSettings()
    configure_logging(monitoring_settings.log_level)
    asyncio.run(main(monitoring_settings))
