"""One area of Redis keys (`<prefix>:<area>:...`), the bounded calls into it, and how stored values are read back.

Every scheduler class owns one area. The prefix is `opswarm` in production and unique per test, so a test can
remove exactly its own keys. Values come back as bytes or str depending on the client's `decode_responses`;
the readers below accept both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "opswarm"
DEFAULT_CALL_TIMEOUT_S = 5.0

T = TypeVar("T")
RawValue = bytes | str | int | float | None


class RedisArea:
    """The keys of one area and every call made on them, each under `call_timeout_s`."""

    def __init__(self, redis: Redis, *, prefix: str, area: str, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        if not prefix or not area:
            raise ValueError("prefix and area must not be empty")
        if call_timeout_s <= 0:
            raise ValueError("call_timeout_s must be positive")
        self.redis = redis
        self.prefix = prefix
        self.area = area
        self.call_timeout_s = call_timeout_s

    def key(self, *parts: str) -> str:
        """`<prefix>:<area>:<part>:...`; parts must not be empty."""
        if any(not part for part in parts):
            raise ValueError("key parts must not be empty")
        return ":".join((self.prefix, self.area, *parts))

    def script(self, source: str) -> AsyncScript:
        """A Lua script run atomically by EVALSHA (loaded again if the server lost it)."""
        return self.redis.register_script(source)

    async def run(self, operation: str, call: Awaitable[T]) -> T:
        """Await one Redis call (a command, a pipeline's execute, a script); TimeoutError after call_timeout_s."""
        try:
            async with asyncio.timeout(self.call_timeout_s):
                return await call
        except TimeoutError:
            log.warning(
                "redis call timed out",
                extra={"area": self.area, "operation": operation, "timeout_s": self.call_timeout_s},
            )
            raise


def as_text(raw: RawValue) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        return raw.decode()
    return str(raw)


def as_float(raw: RawValue) -> float | None:
    text = as_text(raw)
    return None if text is None or text == "" else float(text)


def as_int(raw: RawValue, default: int = 0) -> int:
    text = as_text(raw)
    return default if text is None or text == "" else int(text)


def fields_of(flat: Sequence[RawValue] | dict[Any, RawValue]) -> dict[str, str]:
    """A hash as text: from HGETALL's dict, or from the flat [field, value, ...] list a Lua script returns."""
    if isinstance(flat, dict):
        pairs = list(flat.items())
    else:
        pairs = list(zip(flat[0::2], flat[1::2], strict=True))
    return {as_text(field) or "": as_text(value) or "" for field, value in pairs}


def dump_json(value: dict[str, Any]) -> str:
    """Stored JSON: canonical (sorted keys, compact), so equal dicts store equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def load_json(raw: RawValue) -> dict[str, Any] | None:
    text = as_text(raw)
    if not text:
        return None
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError("stored JSON is not an object")
    return loaded


def milliseconds(seconds: float) -> int:
    """A positive duration in whole milliseconds for PX/PEXPIRE, rounded up (never 0, which Redis refuses)."""
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError("a duration must be positive and finite")
    return max(1, math.ceil(seconds * 1000))
