"""`opswarm doctor` run as a user runs it: all ok against the stack; a dead service named, with its reason."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from qdrant_client import AsyncQdrantClient

from deploy.settings import Settings
from tests.integration.opswarm_cli import run_opswarm
from tests.services import ServiceEndpoints, free_tcp_port

pytestmark = pytest.mark.integration


def _doctor_env(services: ServiceEndpoints, **overrides: str) -> dict[str, str]:
    """Point the CLI at the session's services (local stack or containers), with `overrides` on top."""
    env = {
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "OPSWARM_REDIS_URL": services.redis_url,
        "OPSWARM_MONGO_URL": services.mongo_url,
    }
    if services.qdrant_url:
        env["OPSWARM_QDRANT_URL"] = services.qdrant_url
    else:
        env["OPSWARM_QDRANT_PATH"] = str(services.qdrant_path)
    return {**env, **overrides}


async def test_doctor_is_all_ok_against_the_stack(services: ServiceEndpoints) -> None:
    result = await run_opswarm("doctor", env=_doctor_env(services))
    assert result.returncode == 0, result.describe()
    assert result.last_line == "doctor: kafka=ok redis=ok mongo=ok qdrant=ok", result.describe()


async def test_doctor_names_a_redis_that_went_away(
    services: ServiceEndpoints, settings: Settings, tmp_path: Path
) -> None:
    port = free_tcp_port()
    async with _private_redis(settings.stack.redis_server, tmp_path, port) as url:
        alive = await run_opswarm("doctor", env=_doctor_env(services, OPSWARM_REDIS_URL=url))
        assert "redis=ok" in alive.last_line.split(), alive.describe()
        assert alive.returncode == 0, alive.describe()
    gone = await run_opswarm("doctor", env=_doctor_env(services, OPSWARM_REDIS_URL=url))
    assert gone.returncode == 1, gone.describe()
    assert gone.last_line == "doctor: kafka=ok redis=unreachable mongo=ok qdrant=ok", gone.describe()
    assert f"redis: unreachable: cannot connect to 127.0.0.1:{port}: connection refused" in gone.stdout


async def test_doctor_names_an_unreachable_kafka(services: ServiceEndpoints) -> None:
    address = f"127.0.0.1:{free_tcp_port()}"
    env = _doctor_env(services, OPSWARM_KAFKA__BOOTSTRAP_SERVERS=address, OPSWARM_KAFKA__CONNECT_TIMEOUT_S="3")
    started = time.monotonic()
    result = await run_opswarm("doctor", env=env)
    assert result.returncode == 1, result.describe()
    assert result.last_line.startswith("doctor: kafka=unreachable redis=ok"), result.describe()
    assert f"kafka: unreachable: cannot connect to {address}: connection refused" in result.stdout
    assert "run `make up`" in result.stdout
    assert time.monotonic() - started < 30


async def test_doctor_names_who_holds_the_qdrant_path(services: ServiceEndpoints, tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    holder = AsyncQdrantClient(path=str(path))  # this test process takes the path's exclusive lock
    try:
        # An empty URL selects local path mode even when the session's Qdrant is a server.
        env = _doctor_env(services, OPSWARM_QDRANT_PATH=str(path), OPSWARM_QDRANT_URL="")
        result = await run_opswarm("doctor", env=env)
    finally:
        await holder.close()
    assert result.returncode == 1, result.describe()
    assert result.last_line.endswith("qdrant=locked"), result.describe()
    assert f"{path} is held by pid {os.getpid()}" in result.stdout, result.describe()


@asynccontextmanager
async def _private_redis(redis_server: str, directory: Path, port: int) -> AsyncIterator[str]:
    """A redis-server of this test's own on `port` (data in `directory`); SIGTERM and wait for its exit after."""
    argv = [
        redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "no", "--daemonize", "no",
    ]  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await _wait_until_redis_answers(url, timeout_s=15)
        yield url
    finally:
        process.terminate()
        code = await asyncio.wait_for(process.wait(), 15)
    assert code == 0, f"redis-server exited with {code} on SIGTERM"


async def _wait_until_redis_answers(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        client = aioredis.from_url(url, socket_connect_timeout=1)
        try:
            if await client.ping():
                return
        except (ConnectionError, aioredis.ConnectionError):
            pass
        finally:
            await client.aclose()
        if time.monotonic() > deadline:
            raise AssertionError(f"private redis at {url} did not answer within {timeout_s}s")
        await asyncio.sleep(0.05)
