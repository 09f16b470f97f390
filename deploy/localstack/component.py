"""What the stack needs to know about one of its processes, and how to wait until it answers a real client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.localstack.processes import tail

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 5.0
_PROBE_INTERVAL_S = 0.5


class ComponentError(Exception):
    """A component could not be started; the message says why and which log to read."""


@dataclass(frozen=True)
class PortSetting:
    """A port a component listens on, and the setting that moves it."""

    port: int
    setting: str


@dataclass(frozen=True)
class Component:
    """One process of the local stack."""

    name: str
    ports: tuple[PortSetting, ...]  # the first is the one clients use
    argv: list[str]
    data_dir: Path  # its working directory and data
    log_file: Path  # its stdout and stderr
    # Writes generated configs and initialises storage; raises ComponentError.
    prepare: Callable[[], Awaitable[None]]
    # One real client round trip; raises while the component is not ready.
    probe: Callable[[], Awaitable[None]]
    # More logs worth showing when it fails (e.g. Kafka's log4j file).
    extra_logs: tuple[Path, ...] = field(default=())
    # Variables set on top of the launcher's environment; called after `prepare` (it may read what prepare wrote).
    env: Callable[[], Mapping[str, str]] | None = None
    # Components started (and ready) before this one, and stopped only after it.
    after: tuple[str, ...] = field(default=())
    # `up` restarts it when it runs with other `env` values than the current settings give (e.g. the bridge
    # after the topic namespace changed): for a stateless process whose clients retry; others are refused.
    restart_on_env_change: bool = False

    @property
    def port(self) -> int:
        return self.ports[0].port

    def failure(self, summary: str) -> ComponentError:
        """A ComponentError with `summary`, the log files to read and the last lines of each."""
        parts = [summary]
        for path in (self.log_file, *self.extra_logs):
            lines = tail(path)
            if lines:
                parts.append(f"--- last lines of {path} ---\n{lines}")
            else:
                parts.append(f"(log {path} is empty)")
        return ComponentError("\n".join(parts))


async def wait_ready(component: Component, exited: Callable[[], str | None], timeout_s: float) -> None:
    """Probe until the component answers; fail early if its process exits, or after `timeout_s`.

    `exited()` is None while the process runs, else how it ended (e.g. "exit code 1").
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error = "no probe finished"
    while True:
        ended = exited()
        if ended is not None:
            raise component.failure(f"{component.name} exited during start-up ({ended})")
        try:
            await asyncio.wait_for(component.probe(), _PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - every failure here means "not ready yet"
            name, text = type(exc).__name__, str(exc)
            last_error = text if text.startswith(name) else f"{name}: {text}" if text else name
        else:
            log.info("component ready", extra={"component": component.name, "port": component.port})
            return
        if loop.time() > deadline:
            raise component.failure(
                f"{component.name} did not answer on port {component.port} within {timeout_s:g}s "
                f"(last error: {last_error})"
            )
        await asyncio.sleep(_PROBE_INTERVAL_S)


def http_ready_probe(url: str, timeout_s: float = 2.0) -> Callable[[], Awaitable[None]]:
    """A probe that GETs `url` and raises unless it answers 2xx (the readiness endpoint of an HTTP component)."""

    async def probe() -> None:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url)
        response.raise_for_status()

    return probe
