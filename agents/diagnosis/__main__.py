"""`python -m agents.diagnosis`: the diagnosis agent process."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.diagnosis.service import run_diagnosis
from agents.diagnosis.settings import DiagnosisSettings
from bus.lifecycle import stop_on_signals
from bus.process_logging import configure_logging


async def main(settings: DiagnosisSettings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    redis = Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=10, socket_connect_timeout=10)
    try:
        await run_diagnosis(settings, stop, redis)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    diagnosis_settings = DiagnosisSettings()
    configure_logging(diagnosis_settings.log_level)
    asyncio.run(main(diagnosis_settings))
