"""Wiring: store closed incidents in Qdrant, answer knowledge queries with runbook sections, similar incidents and
action statistics, and serve the knowledge base's HTTP API.

One at-least-once consumer reads both topics: an `incident.closed` is upserted under a deterministic id into the
incident memory and as a document into the knowledge base (a redelivery replaces both with themselves), a
`knowledge.queried` gets a `knowledge.answered` (a repeated answer is harmless: the asker takes the first one for
its query). A store that fails is retried by the consumer loop; a query that fails is answered with what did not
fail, so the asker is never left waiting for its timeout. The HTTP side adds /kb (knowledge/kb_api.py).

A second at-least-once consumer, of a group of its own, drafts the postmortem of each closed incident
(knowledge/postmortem_drafts.py: the model's when `OPSWARM_LLM__BASE_URL` names one, the template's otherwise)
and stores it in the knowledge base: apart, so a slow model never holds up the answers to knowledge queries. A
draft already stored is not drafted again (a redelivery pays the model nothing), and a draft that fails is
logged and skipped: it never holds up or fails anything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from autogen_core.models import ChatCompletionClient
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
from knowledge.kb_api import kb_router
from knowledge.kb_ui import IncidentPages, kb_ui_router
from knowledge.knowledge_base import DocumentResult, KnowledgeBase, open_knowledge_base
from knowledge.llm_client import LlmConfig, build_model_client
from knowledge.postmortem_drafts import draft_postmortem, draft_source, draft_stored, is_draft
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


@dataclass(frozen=True)
class KnowledgeStores:
    """What the agent keeps: closed incidents (similarity, action statistics) and the knowledge base."""

    memory: IncidentMemory
    kb: KnowledgeBase


@asynccontextmanager
async def opened_stores(settings: KnowledgeSettings) -> AsyncIterator[KnowledgeStores]:
    """Both stores over the configured Qdrant (one client), the embedder loaded; closed on the way out."""
    client = qdrant_client_for(settings)
    try:
        embedder = HashingEmbedder(settings.embedding_dimension)
        memory = IncidentMemory(client, embedder, settings.collection, timeout_s=settings.qdrant_timeout_s)
        await memory.ensure_collection()
        kb = await open_knowledge_base(
            client, settings.embedding, local=not settings.qdrant_url, collection=settings.documents_collection,
            timeout_s=settings.qdrant_timeout_s,
        )
        yield KnowledgeStores(memory, kb)
    finally:
        await client.close()


async def store_closed(stores: KnowledgeStores, event: IncidentClosed) -> None:
    """Store a closed incident in both stores; a failure is retriable (the consumer backs off and tries again)."""
    if event.incident_id is None:
        raise NonRetriableError("incident.closed without incident_id: nothing to key the stored incident by")
    try:
        await stores.memory.store(event)
        await stores.kb.store_incident(event)
    except Exception as exc:
        raise RetriableError(f"storing incident {event.incident_id} failed: {type(exc).__name__}: {exc}") from exc


async def answer(stores: KnowledgeStores, query: KnowledgeQueried) -> KnowledgeAnswered:
    """The answer to a query: the best runbook and postmortem sections, similar incidents, and statistics of the
    asked actions when a kind is given. A part that fails is answered empty (and logged) rather than not at all."""
    async with asyncio.TaskGroup() as group:
        sections = group.create_task(_sections(stores.kb, query))
        incidents = group.create_task(_hits(stores.memory, query))
        stats = group.create_task(_action_stats(stores.memory, query))
    hits = [*sections.result(), *incidents.result()]
    log.info(
        "query answered",
        extra={
            "query_event_id": query.event_id,
            "incident_id": query.incident_id,
            "hits": len(hits),
            "action_stats": len(stats.result()),
        },
    )
    return query.follow(
        KnowledgeAnswered,
        produced_by=AGENT,
        query_event_id=query.event_id,
        hits=hits,
        action_stats=stats.result(),
    )


async def _sections(kb: KnowledgeBase, query: KnowledgeQueried) -> list[KnowledgeHit]:
    """Runbook and postmortem sections, drafts left out (incidents come from the memory, with their outcome and
    actions; a draft only retells one of them)."""
    try:
        # Of these types only: the many closed incidents' chunks must not crowd the runbooks out of the top k, nor
        # may their drafts (type postmortem, one per closed incident, which no filter can exclude): the runbooks get
        # a search of their own, the postmortems one deep enough to have some left once the drafts are dropped.
        async with asyncio.TaskGroup() as group:
            runbooks = group.create_task(kb.search(query.query, query.k, filters={"type": "runbook"}))
            depth = max(query.k * 4, 20)
            postmortems = group.create_task(kb.search(query.query, depth, filters={"type": "postmortem"}))
    except Exception:
        log.warning("knowledge base search failed; answering without sections",
                    extra={"query_event_id": query.event_id}, exc_info=True)  # fmt: skip
        return []
    reviewed = [hit for hit in postmortems.result() if not is_draft(hit.source)]
    found = sorted([*runbooks.result(), *reviewed], key=lambda hit: hit.score, reverse=True)
    return [hit.as_knowledge_hit() for hit in found[: query.k]]


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


def build_consumer(settings: KnowledgeSettings, stores: KnowledgeStores) -> EventConsumer:
    async def handle(event: AnyEvent, ctx: RecordContext) -> list[Event] | None:
        if isinstance(event, IncidentClosed):
            await store_closed(stores, event)
            return None
        assert isinstance(event, KnowledgeQueried)
        return [await answer(stores, event)]

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


@dataclass(frozen=True)
class PostmortemDrafter:
    """What drafts closed incidents' postmortems: the knowledge base they go into, the model (None: the template)
    and its settings, and coordination's records for the timeline (None: the draft goes without it)."""

    kb: KnowledgeBase
    model: ChatCompletionClient | None
    llm: LlmConfig
    incidents: IncidentPages | None = None


@asynccontextmanager
async def postmortem_drafter(
    settings: KnowledgeSettings, kb: KnowledgeBase, incidents: IncidentPages | None = None
) -> AsyncIterator[PostmortemDrafter]:
    """The drafter with the process's one model client (None without `OPSWARM_LLM__BASE_URL`), closed on the way
    out (none either with `postmortem_drafts` off). Raises LlmConfigError when the LLM settings cannot make one."""
    model = build_model_client(settings.llm) if settings.postmortem_drafts else None
    try:
        yield PostmortemDrafter(kb, model, settings.llm, incidents)
    finally:
        if model is not None:
            await model.close()


async def draft_closed(drafter: PostmortemDrafter, event: IncidentClosed) -> DocumentResult | None:
    """Draft and store the postmortem of a closed incident unless one is stored already; None when nothing was
    stored. Never raises: a failure is logged and the incident goes without a draft."""
    incident_id = event.incident_id
    if incident_id is None:
        return None
    context = {"incident_id": incident_id, "source": draft_source(incident_id)}
    try:
        if await draft_stored(drafter.kb, incident_id):
            log.info("postmortem draft stored already; not drafted again", extra=context)
            return None
        record = None
        if drafter.incidents is not None:
            try:
                record = await drafter.incidents.get(incident_id)
            except Exception:
                log.warning("incident record not read; drafting without its timeline", extra=context, exc_info=True)
        draft = await draft_postmortem(event, record, drafter.model, drafter.llm)
        [result] = (await drafter.kb.ingest([draft.document()])).results
    except Exception:
        log.warning("postmortem draft failed; the incident goes without one", extra=context, exc_info=True)
        return None
    if result.outcome == "failed":
        log.warning("postmortem draft not stored", extra={**context, "error": result.error})
        return None
    transcript = draft.transcript
    log.info("postmortem draft stored", extra={
        **context, "method": draft.method, "chunks": result.chunks, "llm_status": transcript and transcript.status,
        "prompt_tokens": transcript and transcript.prompt_tokens,
        "completion_tokens": transcript and transcript.completion_tokens,
    })  # fmt: skip
    return result


def build_postmortem_consumer(settings: KnowledgeSettings, drafter: PostmortemDrafter) -> EventConsumer:
    """The consumer that drafts postmortems: closed incidents only, in a consumer group of its own."""

    async def handle(event: AnyEvent, ctx: RecordContext) -> list[Event] | None:
        assert isinstance(event, IncidentClosed)
        await draft_closed(drafter, event)
        return None

    return EventConsumer(
        settings.kafka,
        name=f"knowledge-postmortems-{settings.instance_id}",
        group_id=f"{settings.consumer_group}-postmortems",
        topics=[settings.kafka.topic(INCIDENTS)],
        handler=handle,
        delivery=Delivery.AT_LEAST_ONCE,
        event_types=frozenset({event_type_name(IncidentClosed)}),
        start_at=settings.postmortem_consumer_start,
    )


def qdrant_readiness(memory: IncidentMemory) -> ReadinessCheck:
    """Ready when the incident collection answers a count."""

    async def qdrant() -> str | None:
        await memory.stored()
        return None

    return qdrant


async def run_knowledge(
    settings: KnowledgeSettings,
    stop: asyncio.Event,
    redis: Redis,
    stores: KnowledgeStores,
    consumer: EventConsumer,
    incidents: IncidentPages | None = None,
) -> None:
    """Run the agent (`consumer` from `build_consumer` over `stores`) until `stop` is set; the UI's incident pages
    and the postmortem drafts read `incidents` (coordination's records). With `postmortem_drafts` on, the drafts'
    consumer runs beside `consumer` (and readiness waits for both)."""
    heartbeats = HeartbeatRegistry(redis, settings.redis_prefix, settings.heartbeat_ttl_s)
    identity = AgentIdentity(AGENT, settings.instance_id)
    routers = [kb_router(stores.kb), kb_ui_router(stores.kb, stores.memory, incidents)]
    http = agent_http(settings, routers=routers, readiness=[qdrant_readiness(stores.memory)])
    async with postmortem_drafter(settings, stores.kb, incidents) as drafter:
        consumers = [consumer]
        if settings.postmortem_drafts:
            consumers.append(build_postmortem_consumer(settings, drafter))
        await run_agent(identity, consumers, heartbeats, stop, beat_every_s=settings.heartbeat_every_s, http=http)
