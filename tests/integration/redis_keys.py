"""Redis helpers for integration tests: a client for the test stack, keys under a prefix, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

_CLIENT_TIMEOUT_S = 10.0


def redis_for(services, *, decode_responses: bool = False) -> Redis:  # noqa: ANN001 - tests/conftest.py
    return Redis.from_url(
        services.redis_url,
        decode_responses=decode_responses,
        socket_connect_timeout=_CLIENT_TIMEOUT_S,
        socket_timeout=_CLIENT_TIMEOUT_S,
    )


async def keys_under(client: Redis, prefix: str) -> list[str]:
    found = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    return sorted(key.decode() if isinstance(key, bytes) else key for key in found)


async def eventually(condition: Callable[[], Awaitable[bool]], deadline_s: float = 5.0) -> None:
    """Poll `condition` until it holds; fail the test if it still does not after `deadline_s`."""
    give_up_at = time.monotonic() + deadline_s
    while not await condition():
        if time.monotonic() > give_up_at:
            pytest.fail(f"condition not met within {deadline_s} s")
        await asyncio.sleep(0.02)
