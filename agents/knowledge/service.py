"""Wiring: store closed incidents in Qdrant, answer knowledge queries with similar incidents and action statistics.

One at-least-once consumer reads both topics: an `incident.closed` is upserted under a deterministic id (a
redelivery replaces the point with itself), a `knowledge.queried` gets a `knowledge.answered` (a repeated answer
is harmless: the asker takes the first one for its query). A store that fails is retried by the consumer loop;
a query that fails is answered with nothing, so the asker is never left waiting for its timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from qdrant_client import AsyncQdrantClient
from redis.asyncio import Redis

from agents.knowledge.settings import KnowledgeSettings
from bus.consumer import Delivery, EventConsumer, RecordContext
from bus.errors import NonRetriableError, RetriableError
from bus.events import (
    ActionStat,
    AnyEvent,
    Event,
    IncidentClosed,
    KnowledgeAnswered,
    KnowledgeHit,
    KnowledgeQueried,
    event_type_name,
)
from bus.topics import INCIDENTS, KNOWLEDGE
from knowledge.incident_memory import IncidentMemory
from knowledge.text_vectors import HashingEmbedder
from scheduler.agent_http import ReadinessCheck, agent_http
from scheduler.agent_process import AgentIdentity, run_agent
from scheduler.heartbeats import HeartbeatRegistry

log = logging.getLogger(__name__)

AGENT = "knowledge"


def qdrant_client_for(settings: KnowledgeSettings) -> AsyncQdrantClient:
    """A client of the configured Qdrant server, else of the local directory (raises if another process holds it)."""
    if settings.qdrant_url:
        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return AsyncQdrantClient(url=settings.qdrant_url, api_key=api_key, timeout=int(settings.qdrant_timeout_s))
    assert settings.qdrant_path is not None  # the settings require one of the two
    return AsyncQdrantClient(path=settings.qdrant_path)


@asynccontextmanager
async def opened_memory(settings: KnowledgeSettings) -> AsyncIterator[IncidentMemory]:
    """The incident memory over the configured Qdrant and collection, its client closed on the way out."""
    client = qdrant_client_for(settings)
    try:
        embedder = HashingEmbedder(settings.embedding_dimension)
        memory = IncidentMemory(client, embedder, settings.collection, timeout_s=settings.qdrant_timeout_s)
        await memory.ensure_collection()
        yield memory
    finally:
        await client.close()


async def store_closed(memory: IncidentMemory, event: IncidentClosed) -> None:
    """Store a closed incident; a failure is retriable (the consumer backs off and tries again)."""
    if event.incident_id is None:
        raise NonRetriableError("incident.closed without incident_id: nothing to key the stored incident by")
    try:
        await memory.store(event)
    except Exception as exc:
        raise RetriableError(f"storing incident {event.incident_id} failed: {type(exc).__name__}: {exc}") from exc


async def answer(memory: IncidentMemory, query: KnowledgeQueried) -> KnowledgeAnswered:
    """The answer to a query: similar incidents, and statistics of the asked actions when a kind is given.

    Either part that fails is answered empty (and logged) rather than not at all.
    """
    async with asyncio.TaskGroup() as group:
        hits = group.create_task(_hits(memory, query))
        stats = group.create_task(_action_stats(memory, query))
    log.info(
        "query answered",
        extra={
            "query_event_id": query.event_id,
            "incident_id": query.incident_id,
            "hits": len(hits.result()),
            "action_stats": len(stats.result()),
        },
    )
    return query.follow(
        KnowledgeAnswered,
        produced_by=AGENT,
        query_event_id=query.event_id,
        hits=hits.result(),
        action_stats=stats.result(),
    )


async def _hits(memory: IncidentMemory, query: KnowledgeQueried) -> list[KnowledgeHit]:
    try:
        return await memory.search(query.query, query.k, query.filters)
    except Exception:
        log.warning("search failed; answering without hits", extra={"query_event_id": query.event_id}, exc_info=True)
        return []


async def _action_stats(memory: IncidentMemory, query: KnowledgeQueried) -> list[ActionStat]:
    if not query.kind or not query.actions:
        return []
    try:
        return await memory.action_stats(query.kind, query.actions)
    except Exception:
        log.warning(
            "action statistics failed; answering without them",
            extra={"query_event_id": query.event_id, "kind": query.kind},
            exc_info=True,
        )
        return []


def build_consumer(settings: KnowledgeSettings, memory: IncidentMemory) -> EventConsumer:
    async def handle(event: AnyEvent, ctx: RecordContext) -> list[Event] | None:
        if isinstance(event, IncidentClosed):
            await store_closed(memory, event)
            return None
        assert isinstance(event, KnowledgeQueried)
        return [await answer(memory, event)]

    return EventConsumer(
        settings.kafka,
        name=f"knowledge-{settings.instance_id}",
        group_id=settings.consumer_group,
        topics=[settings.kafka.topic(INCIDENTS), settings.kafka.topic(KNOWLEDGE)],
        handler=handle,
        delivery=Delivery.AT_LEAST_ONCE,
        event_types=frozenset({event_type_name(IncidentClosed), event_type_name(KnowledgeQueried)}),
        start_at=settings.consumer_start,
    )


def qdrant_readiness(memory: IncidentMemory) -> ReadinessCheck:
    """Ready when the incident collection answers a count."""

    async def qdrant() -> str | None:
        await memory.stored()
        return None

    return qdrant


async def run_knowledge(
    settings: KnowledgeSettings, stop: asyncio.Event, redis: Redis, memory: IncidentMemory, consumer: EventConsumer
) -> None:
    """Run the agent (`consumer` from `build_consumer` over `memory`) until `stop` is set."""
    heartbeats = HeartbeatRegistry(redis, settings.redis_prefix, settings.heartbeat_ttl_s)
    identity = AgentIdentity(AGENT, settings.instance_id)
    http = agent_http(settings, readiness=[qdrant_readiness(memory)])
    await run_agent(identity, [consumer], heartbeats, stop, beat_every_s=settings.heartbeat_every_s, http=http)
