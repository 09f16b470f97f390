"""JSON logs on stderr for the CLI process, configured once in `deploy.cli.main`."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

# Client libraries log every failed connection attempt; the CLI reports those failures itself, with a reason.
_CHATTY_LIBRARIES = ("aiokafka", "kafka", "pymongo", "qdrant_client", "httpx", "testcontainers")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"asctime": "time", "levelname": "level"}
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        for name in _CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.CRITICAL)
