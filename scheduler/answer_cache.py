"""Answers worth keeping for a while, by the digest of the question (a model's diagnosis, say): an alert storm
asks the same question many times and should pay for it once.

A key is `<prefix>:answers:<namespace>:<digest>`, a JSON object with a Redis expiry. `digest_of` makes the digest of
any JSON-able question (sha256 of its canonical JSON). The cache is an optimisation: a Redis failure reads as a miss
and a write that fails is logged and forgotten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from scheduler.redis_area import DEFAULT_CALL_TIMEOUT_S, DEFAULT_PREFIX, RedisArea, dump_json, load_json, milliseconds

log = logging.getLogger(__name__)

AREA = "answers"


def digest_of(question: Any) -> str:
    """sha256 (hex) of `question`'s canonical JSON: equal questions, equal digests, whatever their key order."""
    canonical = json.dumps(question, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AnswerCache:
    """get/put of JSON answers under one namespace, each kept `ttl_s`."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        ttl_s: float,
        prefix: str = DEFAULT_PREFIX,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._namespace = namespace
        self._ttl_ms = milliseconds(ttl_s)

    async def get(self, digest: str) -> dict[str, Any] | None:
        """The answer stored under `digest`, or None (also when Redis fails or the stored value is not JSON)."""
        key = self._area.key(self._namespace, digest)
        try:
            return load_json(await self._area.run("answers.get", self._area.redis.get(key)))
        except (RedisError, TimeoutError, OSError, ValueError) as exc:
            log.warning("answer cache not read", extra={"key": key, "error": repr(exc)})
            return None

    async def put(self, digest: str, answer: dict[str, Any]) -> bool:
        """Keep `answer` under `digest` for the cache's TTL; False when it could not be written."""
        key = self._area.key(self._namespace, digest)
        try:
            await self._area.run("answers.put", self._area.redis.set(key, dump_json(answer), px=self._ttl_ms))
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("answer cache not written", extra={"key": key, "error": repr(exc)})
            return False
        return True
