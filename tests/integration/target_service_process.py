"""Runs the demo target service (`python -m deploy.target_service`) as a real subprocess (this module holds no
tests), and reads its /metrics."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.services import free_tcp_port

_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TargetProcess:
    name: str
    port: int
    data_dir: Path
    log_file: Path
    process: asyncio.subprocess.Process

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@asynccontextmanager
async def running_target_service(directory: Path, name: str = "demo", **settings: str) -> AsyncIterator[TargetProcess]:
    """The service on a free port with its data dir in `directory`; `settings` are OPSWARM_TARGET_<KEY> values.

    Answers once /healthz does; SIGTERM (and a wait for the exit) afterwards, unless it already exited.
    """
    port = free_tcp_port()
    data_dir = directory / f"{name}-data"
    log_file = directory / f"{name}.log"
    env = {
        **os.environ,
        "OPSWARM_TARGET_NAME": name,
        "OPSWARM_TARGET_PORT": str(port),
        "OPSWARM_TARGET_DATA_DIR": str(data_dir),
        **{f"OPSWARM_TARGET_{key.upper()}": value for key, value in settings.items()},
    }
    with log_file.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "deploy.target_service", stdout=output, stderr=output, env=env
        )
    target = TargetProcess(name, port, data_dir, log_file, process)
    try:
        await _wait_healthy(target)
        yield target
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), _STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_healthy(target: TargetProcess) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if target.process.returncode is not None:
                raise AssertionError(f"target service exited ({target.process.returncode}):\n{target.log_text()}")
            try:
                if (await client.get(f"{target.base_url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"target service not healthy within {_START_TIMEOUT_S}s:\n{target.log_text()}")
            await asyncio.sleep(0.05)


async def scrape(client: httpx.AsyncClient, target: TargetProcess) -> dict[tuple[str, frozenset], float]:
    """Every sample of the target's /metrics, by (sample name, its labels as a frozenset of pairs)."""
    response = await client.get(f"{target.base_url}/metrics")
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))
