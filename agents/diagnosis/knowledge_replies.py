"""Asking knowledge over Kafka and waiting for its answer: request/reply on `opswarm.knowledge.v1`.

`ask` publishes a KnowledgeQueried (same incident and correlation as the diagnosis request) and waits, within a
timeout, for the KnowledgeAnswered whose `query_event_id` is the query's event id. `run` is the listener: it
assigns itself every partition of the topic (no consumer group: nothing to commit, no rebalance, every
diagnosis instance sees every answer and resolves only its own questions) and starts at the end. It resolves
its positions before it says it is ready, and `ask` publishes only once it is, so an answer cannot slip in
before the listener looks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bus.admin import partition_counts
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.errors import EventDecodeError
from bus.events import Event, KnowledgeAnswered, KnowledgeQueried
from bus.producer import EventPublisher
from bus.topics import KNOWLEDGE

log = logging.getLogger(__name__)

_POLL_MS = 250


@dataclass(frozen=True)
class KnowledgeReply:
    """Knowledge's answer, or why there is none (`skipped`: not asked)."""

    status: Literal["answered", "timeout", "error", "skipped"]
    answer: KnowledgeAnswered | None = None
    error: str | None = None


class KnowledgeReplies:
    """Publishes knowledge queries and hands each answer to the question waiting for it."""

    def __init__(self, config: KafkaConfig, publisher: EventPublisher, *, client_id: str, produced_by: str) -> None:
        self._config = config
        self._publisher = publisher
        self._client_id = client_id
        self._produced_by = produced_by
        self._pending: dict[str, asyncio.Future[KnowledgeAnswered]] = {}
        self._ready = asyncio.Event()

    async def wait_ready(self) -> None:
        """Returns once the listener reads the topic from known positions."""
        await self._ready.wait()

    async def readiness(self) -> str | None:
        """A readiness check of the agent's /readyz: None once the listener reads the topic."""
        return None if self._ready.is_set() else "knowledge answer listener not ready"

    async def run(self, stop: asyncio.Event) -> None:
        """Listen for answers until `stop` is set (a background task of the agent)."""
        topic = self._config.topic(KNOWLEDGE)
        counts = await partition_counts(self._config, [topic])
        if not counts.get(topic):
            raise RuntimeError(f"topic {topic} does not exist: were the topics created?")
        partitions = [TopicPartition(topic, p) for p in range(counts[topic])]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._config.bootstrap_servers,
            client_id=f"{self._config.client_id_prefix}-{self._client_id}",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=int(self._config.request_timeout_s * 1000),
        )
        await asyncio.wait_for(consumer.start(), self._config.connect_timeout_s)
        try:
            consumer.assign(partitions)
            await asyncio.wait_for(consumer.seek_to_end(*partitions), self._config.request_timeout_s)
            for tp in partitions:
                await asyncio.wait_for(consumer.position(tp), self._config.request_timeout_s)
            self._ready.set()
            log.info("knowledge listener ready", extra={"partitions": len(partitions)})
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=_POLL_MS)
                for records in batch.values():
                    for record in records:
                        self._deliver(record.value)
        finally:
            self._ready.clear()
            await consumer.stop()

    def _deliver(self, raw: bytes | None) -> None:
        try:
            event = decode_event(raw)
        except EventDecodeError:
            return  # not ours to judge: the topic's consumers dead-letter it
        if not isinstance(event, KnowledgeAnswered):
            return
        waiting = self._pending.get(event.query_event_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(event)

    async def ask(
        self, cause: Event, query: str, *, k: int, kind: str | None, actions: Sequence[str], timeout_s: float
    ) -> KnowledgeReply:
        """Ask knowledge about `cause`'s incident; the answer, or a timeout/error reply after at most timeout_s."""
        queried = cause.follow(
            KnowledgeQueried, produced_by=self._produced_by, query=query, k=k, kind=kind, actions=list(actions)
        )
        answer: asyncio.Future[KnowledgeAnswered] = asyncio.get_running_loop().create_future()
        self._pending[queried.event_id] = answer
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
                await self._publisher.publish(queried)
                reply = await answer
        except TimeoutError:
            log.info("knowledge did not answer", extra={"query_event_id": queried.event_id, "timeout_s": timeout_s})
            return KnowledgeReply(status="timeout", error=f"knowledge did not answer within {timeout_s:g}s")
        except (KafkaError, OSError) as exc:
            log.warning("knowledge not asked", extra={"query_event_id": queried.event_id, "error": repr(exc)})
            return KnowledgeReply(status="error", error=f"knowledge not asked: {exc!r}")
        finally:
            self._pending.pop(queried.event_id, None)
        return KnowledgeReply(status="answered", answer=reply)
