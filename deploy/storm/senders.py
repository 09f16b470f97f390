"""The storm's two ways in: the alert bridge over HTTP (Alertmanager webhooks), or straight to Kafka.

Both take an AlertBatch (one webhook body) and return an Acceptance once the alerts are on Kafka: their event ids
(in body order) and when they were first sent and accepted, on the monotonic clock and the wall clock.

- `BridgeSender` posts the body to `POST /alertmanager` with the bearer token, on one aiohttp connection pool of
  `concurrency` connections. A 503 (Kafka did not take them in time, or the bridge is overloaded), the other
  RETRIED_STATUSES and connection errors or timeouts are retried with the same body (same event ids) after a
  backoff that honours Retry-After, until `retry_deadline_s`; any other 4xx is refused for good (BridgeRefused),
  never retried.
- `KafkaSender` builds the very AlertReceived events the bridge would build from the same body
  (`alertmanager_events`) and publishes them with an EventPublisher (acks=all, idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import orjson
from aiokafka.errors import KafkaError

from bus.bridge.alert_events import Receipt, alertmanager_events
from bus.bridge.rejections import Rejection
from bus.config import KafkaConfig
from bus.producer import EventPublisher
from deploy.storm.alert_mix import AlertBatch

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0
RETRY_DEADLINE_S = 60.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
PROBE_TIMEOUT_S = 5.0
# Worth the same request again: Kafka did not take the alerts in time or the bridge is overloaded (503), a proxy's
# trouble (502, 504), the body came too slowly (408), too many requests (429).
RETRIED_STATUSES = frozenset({408, 429, 502, 503, 504})


class SendFailed(Exception):
    """Alerts could not be delivered: the way in is unreachable, refused them, or did not take them in time."""


class BridgeRefused(SendFailed):
    """The bridge answered 4xx: the request is wrong (or the token), and sending it again will not help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"the bridge refused the alerts: HTTP {status}: {detail}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Acceptance:
    """A batch on Kafka: its event ids in body order, when it was first sent and when it was accepted."""

    event_ids: list[str]
    sent_at: float  # monotonic, at the first attempt
    accepted_at: float  # monotonic
    accepted_wall: float  # time.time()
    attempts: int = 1


class AlertSender(Protocol):
    retries: int  # requests sent again (the bridge's 503s, connection errors)

    async def start(self) -> None: ...
    async def send(self, batch: AlertBatch) -> Acceptance: ...
    async def stop(self) -> None: ...


class BridgeSender:
    """Webhook bodies to the bridge's `POST /alertmanager`, at most `concurrency` requests at a time."""

    def __init__(
        self, bridge_url: str, token: str | None, *, concurrency: int, request_timeout_s: float = REQUEST_TIMEOUT_S,
        retry_deadline_s: float = RETRY_DEADLINE_S,
    ) -> None:  # fmt: skip
        self.url = bridge_url.rstrip("/")
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        self._retry_deadline_s = retry_deadline_s
        self._session: aiohttp.ClientSession | None = None
        self.retries = 0

    async def start(self) -> None:
        """Open the pool and check that the bridge answers and is ready (Kafka reachable); SendFailed if not."""
        connector = aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        try:
            async with self._session.get(f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(PROBE_TIMEOUT_S)) as reply:
                text = await reply.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self.stop()
            raise SendFailed(f"cannot reach the bridge at {self.url}: {_describe(exc)}") from None
        if reply.status != 200:
            await self.stop()
            raise SendFailed(f"the bridge at {self.url} is not ready: HTTP {reply.status}: {text[:200]}")

    async def send(self, batch: AlertBatch) -> Acceptance:
        session = self._session
        assert session is not None, "start() first"
        sent_at = time.monotonic()
        deadline = sent_at + self._retry_deadline_s
        backoff = BACKOFF_FIRST_S
        attempt = 0
        while True:
            attempt += 1
            try:
                async with session.post(f"{self.url}/alertmanager", data=batch.body, headers=self._headers) as reply:
                    status, payload, retry_after = reply.status, await reply.read(), reply.headers.get("retry-after")
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, payload, retry_after, problem = 0, b"", None, _describe(exc)
            else:
                if status == 200:
                    answer = orjson.loads(payload)
                    return Acceptance(answer["event_ids"], sent_at, time.monotonic(), time.time(), attempt)
                problem = f"HTTP {status}: {payload[:300].decode(errors='replace')}"
                if status not in RETRIED_STATUSES:
                    if 400 <= status < 500:
                        raise BridgeRefused(status, payload[:300].decode(errors="replace"))
                    raise SendFailed(f"the bridge failed: {problem}")
            wait_s = max(backoff, _retry_after_s(retry_after))
            if time.monotonic() + wait_s > deadline:
                raise SendFailed(f"the bridge did not take the alerts within {self._retry_deadline_s:g} s "
                                 f"({attempt} attempts; last: {problem})")  # fmt: skip
            self.retries += 1
            log.info("bridge request retried", extra={"status": status, "attempt": attempt, "problem": problem,
                                                      "wait_s": wait_s, "group": batch.group})  # fmt: skip
            await asyncio.sleep(wait_s)  # the backoff itself, not a wait for anything
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class KafkaSender:
    """The bridge's AlertReceived events for each body, published straight to the alerts topic."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._publisher = EventPublisher(config, client_id="storm")
        self._started = False
        self.retries = 0  # the idempotent producer retries inside; nothing is sent again from here

    async def start(self) -> None:
        try:
            await self._publisher.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._publisher.stop()
            raise SendFailed(f"cannot reach Kafka at {self._config.bootstrap_servers}: {_describe(exc)}") from None
        self._started = True

    async def send(self, batch: AlertBatch) -> Acceptance:
        sent_at = time.monotonic()
        try:
            events = alertmanager_events(orjson.loads(batch.body), Receipt.now())
        except Rejection as exc:  # the bridge would answer 422: a bug of the mix
            raise SendFailed(f"the bridge would refuse the alerts: {exc.detail}") from None
        try:
            async with asyncio.timeout(self._config.publish_timeout_s):
                acks = [await self._publisher.enqueue(event) for event in events]
                await asyncio.gather(*acks)
        except (KafkaError, TimeoutError) as exc:
            raise SendFailed(f"Kafka did not take the alerts within {self._config.publish_timeout_s:g} s: "
                             f"{_describe(exc)}") from None  # fmt: skip
        return Acceptance([event.event_id for event in events], sent_at, time.monotonic(), time.time())

    async def stop(self) -> None:
        if self._started:
            await asyncio.wait_for(self._publisher.stop(), self._config.request_timeout_s)
            self._started = False


def _retry_after_s(value: str | None) -> float:
    """Retry-After in seconds (the HTTP-date form is not used by the bridge: 0)."""
    try:
        return min(BACKOFF_MAX_S, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
