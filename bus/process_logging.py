"""JSON logs on stderr, configured once by each process's entry point (the CLI, every agent)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

# Client libraries log every failed connection attempt; the CLI reports those failures itself, with a reason.
CHATTY_LIBRARIES = ("aiokafka", "kafka", "pymongo", "qdrant_client", "httpx", "testcontainers")


def configure_logging(level: str, *, quiet_clients: bool = False) -> None:
    """JSON lines on stderr at `level`; with `quiet_clients`, client libraries only speak at DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"asctime": "time", "levelname": "level"}
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if quiet_clients and level != "DEBUG":
        for name in CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.CRITICAL)
