"""`python -m deploy.target_service`: one target service process, served by uvicorn until SIGTERM or a crash."""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from prometheus_client import disable_created_metrics
from pydantic import ValidationError

from bus.process_logging import configure_logging
from deploy.target_service.app import TargetService, build_app
from deploy.target_service.settings import TargetSettings


async def serve(settings: TargetSettings) -> None:
    """Serve until uvicorn stops (it handles SIGTERM/SIGINT: graceful shutdown, then the signal's default)."""
    config = uvicorn.Config(
        build_app(TargetService(settings)),
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's records go through our JSON handler
        access_log=False,
        lifespan="on",
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    try:
        settings = TargetSettings()
    except ValidationError as exc:
        sys.exit(f"target service: invalid settings (OPSWARM_TARGET_* environment variables):\n{exc}")
    configure_logging(settings.log_level)
    disable_created_metrics()  # no *_created series next to each counter: Prometheus has no use for them
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
