"""`python -m bus.bridge`: the alert bridge process (settings `OPSWARM_*`, e.g. `OPSWARM_BRIDGE__PORT`), on uvloop."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from bus.bridge.server import CannotListen, run_bridge_on_uvloop
from bus.bridge.settings import BridgeSettings
from bus.process_logging import configure_logging

log = logging.getLogger("bus.bridge")


def main() -> int:
    try:
        settings = BridgeSettings()
    except ValidationError as exc:
        print(f"bridge: invalid settings (OPSWARM_* environment variables):\n{exc}", file=sys.stderr)
        return 2
    # aiokafka logs every failed connection attempt (several a second while Kafka is away); the bridge says
    # what matters itself: "kafka producer retired", "request rejected" with the reason.
    configure_logging(settings.log_level, quiet_clients=True)
    try:
        run_bridge_on_uvloop(settings)
    except CannotListen as exc:
        log.error("bridge cannot listen", extra={"reason": str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
