"""Process lifecycle for bus clients: a stop event that SIGTERM and SIGINT set, and the collector's tuning."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

log = logging.getLogger(__name__)


def stop_on_signals(stop: asyncio.Event, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Make the given signals set `stop` (call from inside the running event loop)."""
    loop = asyncio.get_running_loop()

    def _request_stop(sig: signal.Signals) -> None:
        log.info("stop requested", extra={"signal": sig.name})
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, _request_stop, sig)


# gc.set_threshold for processes that handle thousands of events a second (the bridge, the agents, `opswarm
# storm`): a young generation of 50,000 objects instead of 700 (what cycles hold meanwhile stays a few megabytes),
# older generations as rarely as the default ratios allow. With the defaults, collections were 35% of the
# bridge's CPU in a storm, mostly full ones every ~300 ms.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_collector_for_throughput() -> None:
    """Freeze what start-up made (it lives as long as the process: no collection walks it again) and collect
    young objects less often. Call once, from an entry point, after the imports."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
