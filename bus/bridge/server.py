"""Serving the bridge with uvicorn until a stop event is set: `python -m bus.bridge` and `opswarm bridge`.

The socket is bound before serving (a port in use fails at once, and port 0 picks a free one); uvicorn's own
signal handling is left out: it re-raises SIGTERM after its shutdown, which would end the process "killed by
SIGTERM". SIGTERM and SIGINT set the stop event instead: uvicorn stops accepting, finishes the requests in hand
(at most GRACEFUL_SHUTDOWN_S), the producer flushes and closes, and the process exits 0.

Under load: HTTP is parsed by httptools (uvicorn's C parser, a dependency: asked for by name, so that its absence
fails at start instead of falling back to the pure-Python h11); `bridge.backlog` is the listening socket's queue,
`bridge.max_connections` uvicorn's own limit (past it uvicorn answers 503 before the app sees the request; the
app's admission control, `bridge.max_inflight_alerts`, is the limit that normally answers first), and
`bridge.keep_alive_s` how long an idle connection is kept. `python -m bus.bridge` runs all this on uvloop, with
the garbage collector tuned (GC_THRESHOLDS): with the default thresholds a storm of alerts, each a few dozen
short-lived objects, set off a full collection every few hundred milliseconds, a third of the bridge's CPU.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Generator
from contextlib import contextmanager

import uvicorn
import uvloop

from bus.bridge.app import create_app
from bus.bridge.settings import BridgeSettings
from bus.lifecycle import stop_on_signals, tune_collector_for_throughput

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5.0


class CannotListen(Exception):
    """The bridge's address cannot be bound (in use, not ours, not an address)."""


class BridgeServer:
    """The bridge app on a socket of its own; `bind` first (optional), then `serve` until `stop` is set."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.bound_port: int | None = None
        self._socket: socket.socket | None = None

    def bind(self) -> int:
        """Open the listening socket now (CannotListen if the port is taken, say); the bound port."""
        if self._socket is None:
            host, port = self.settings.bridge.host, self.settings.bridge.port
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                self._socket = socket.create_server((host, port), family=family, backlog=self.settings.bridge.backlog)
            except OSError as exc:
                raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
            self.bound_port = int(self._socket.getsockname()[1])
            log.info("bridge bound", extra={"host": host, "port": self.bound_port})
        assert self.bound_port is not None
        return self.bound_port

    async def serve(self, stop: asyncio.Event) -> None:
        self.bind()
        assert self._socket is not None
        bridge = self.settings.bridge
        config = uvicorn.Config(
            create_app(self.settings), http="httptools", log_config=None, access_log=False, lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, backlog=bridge.backlog,
            limit_concurrency=bridge.max_connections, timeout_keep_alive=bridge.keep_alive_s,
        )  # fmt: skip
        server = _ServerWithoutSignals(config)
        try:
            async with asyncio.TaskGroup() as group:
                serving = group.create_task(server.serve(sockets=[self._socket]))
                stopping = group.create_task(stop.wait())
                await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
                server.should_exit = True
                stopping.cancel()
        finally:
            self.close()
        if not server.started:
            raise RuntimeError("the bridge did not start (see the log: lifespan or socket trouble)")
        log.info("bridge stopped", extra={"port": self.bound_port})

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def run_bridge_on_uvloop(settings: BridgeSettings, announce: Callable[[str], None] | None = None) -> None:
    """`run_bridge` in a uvloop event loop of its own, the collector tuned for the process (an entry point's
    call: CannotListen as run_bridge)."""
    tune_collector_for_throughput()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_bridge(settings, announce))


async def run_bridge(settings: BridgeSettings, announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; `announce` gets the URL once the port is bound."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    server = BridgeServer(settings)
    port = server.bind()
    if announce is not None:
        announce(f"http://{_url_host(settings.bridge.host)}:{port}")
    await server.serve(stop)


class _ServerWithoutSignals(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
