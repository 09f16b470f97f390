"""Closed incidents in Qdrant: one point per incident, found again by similarity, counted for action statistics.

A closed incident becomes one point whose id is derived from the incident id (uuid5), so storing it again
replaces it and never counts it twice. Its vector embeds a text of what the incident looked like and what was
done (title, kind, service, alerts and their label values, hypothesis, actions and targets, summary); its
payload keeps the facts (outcome, verified, actions, durations...) for the answer and for filtered counts.

The collection records the embedder's `model_id` and `dimension` in its metadata when it is created, and
`ensure_collection` refuses a collection made by another embedder (`EmbedderMismatch`): vectors of two embedders
never share a collection.

Success statistics of an action for a kind of incident are two exact counts with payload filters: attempts =
incidents of that kind whose actions include it, successes = those of them remediated and verified.

Every call to Qdrant runs under a timeout; failures raise (the caller decides: retry a store, answer a query
with nothing).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from bus.events import ActionStat, IncidentClosed, KnowledgeHit
from knowledge.text_vectors import Embedder

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "incidents"
# The namespace of point ids: uuid5(INCIDENT_POINTS, incident_id). Never change it (stored ids derive from it).
INCIDENT_POINTS = uuid.UUID("5d0c3f4e-8a51-4c3e-9a57-2f1e0b7c6d10")
SUCCESS_OUTCOME = "remediated"
# Payload fields a search may filter on (exact match; for lists, any element), each with a keyword index.
FILTER_FIELDS = ("kind", "service", "outcome", "severity", "alertnames", "action_names")
SNIPPET_CHARS = 280
_META_MODEL = "embedder_model_id"
_META_DIMENSION = "embedder_dimension"


class EmbedderMismatch(RuntimeError):
    """The collection holds vectors of another embedder (or was not made by this store)."""


def point_id(incident_id: str) -> str:
    """The id of an incident's point: the same incident always lands on the same point."""
    return str(uuid.uuid5(INCIDENT_POINTS, incident_id))


def incident_text(event: IncidentClosed) -> str:
    """What gets embedded: how the incident looked and what was done about it (not how it ended)."""
    lines = [event.title, f"kind {event.kind or ''}", f"service {event.service}"]
    for alert in event.alerts:
        lines.append(" ".join([alert.alertname, *alert.labels.values()]))
    if event.hypothesis:
        lines.append(event.hypothesis)
    lines.extend(f"{step.action} {step.target}" for step in event.actions)
    if event.summary:
        lines.append(event.summary)
    return "\n".join(lines)


def incident_payload(event: IncidentClosed) -> dict[str, Any]:
    """The facts kept with the vector (JSON values only)."""
    if event.incident_id is None:
        raise ValueError("an incident.closed event without incident_id cannot be stored")
    return {
        "incident_id": event.incident_id,
        "kind": event.kind,
        "service": event.service,
        "severity": event.severity,
        "title": event.title,
        "outcome": event.outcome,
        "verified": event.verified,
        "hypothesis": event.hypothesis,
        "actions": [step.model_dump(mode="json", include={"action", "target", "params"}) for step in event.actions],
        "action_names": sorted({step.action for step in event.actions}),
        "alertnames": sorted({alert.alertname for alert in event.alerts}),
        "durations_s": dict(event.durations_s),
        "summary": event.summary,
        "closed_at": event.occurred_at.isoformat(),
        "closed_event_id": event.event_id,
    }


class IncidentMemory:
    """Stores closed incidents and answers similarity searches and action statistics over them.

    Call `ensure_collection()` once before anything else.
    """

    def __init__(
        self,
        client: AsyncQdrantClient,
        embedder: Embedder,
        collection: str = DEFAULT_COLLECTION,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._client = client
        self._collection = collection
        self._embedder = embedder
        self._timeout_s = timeout_s

    @property
    def collection(self) -> str:
        return self._collection

    async def store(self, event: IncidentClosed) -> str:
        """Upsert the closed incident; returns its point id. Storing the same incident again replaces it."""
        payload = incident_payload(event)
        [vector] = await self._call(self._embedder.embed([incident_text(event)]))
        pid = point_id(payload["incident_id"])
        point = models.PointStruct(id=pid, vector=vector, payload=payload)
        await self._call(self._client.upsert(self._collection, points=[point], wait=True))
        log.info(
            "incident stored",
            extra={"incident_id": payload["incident_id"], "kind": event.kind, "outcome": event.outcome},
        )
        return pid

    async def get(self, incident_id: str) -> dict[str, Any] | None:
        """The stored payload of an incident, or None."""
        found = await self._call(self._client.retrieve(self._collection, ids=[point_id(incident_id)]))
        return dict(found[0].payload or {}) if found else None

    async def search(self, query: str, k: int = 5, filters: Mapping[str, str] | None = None) -> list[KnowledgeHit]:
        """The `k` stored incidents most similar to `query`, best first, optionally narrowed by payload filters.

        Filters are exact matches on FILTER_FIELDS; `type` may be given and only "incident" matches here. An
        unknown filter field raises ValueError (a caller's mistake, not "no match").
        """
        conditions: list[models.Condition] = []
        for key, value in (filters or {}).items():
            if key == "type":
                if value != "incident":
                    return []
                continue
            if key not in FILTER_FIELDS:
                raise ValueError(f"cannot filter incidents on {key!r}; filterable: {', '.join(FILTER_FIELDS)}")
            conditions.append(_equals(key, value))
        [vector] = await self._call(self._embedder.embed([query]))
        if not any(vector):
            return []  # no term of the query is known to the embedder: nothing is similar
        response = await self._call(
            self._client.query_points(
                self._collection,
                query=vector,
                query_filter=models.Filter(must=conditions) if conditions else None,
                limit=k,
                with_payload=True,
            )
        )
        return [_hit(point) for point in response.points]

    async def action_stats(self, kind: str, actions: Sequence[str]) -> list[ActionStat]:
        """How each action fared on closed incidents of `kind`, in the order asked (repeats asked once)."""
        wanted = list(dict.fromkeys(actions))
        async with asyncio.TaskGroup() as group:
            counts = [
                (
                    group.create_task(self._count(_equals("kind", kind), _equals("action_names", action))),
                    group.create_task(
                        self._count(
                            _equals("kind", kind),
                            _equals("action_names", action),
                            _equals("outcome", SUCCESS_OUTCOME),
                            models.FieldCondition(key="verified", match=models.MatchValue(value=True)),
                        )
                    ),
                )
                for action in wanted
            ]
        return [
            ActionStat(kind=kind, action=action, attempts=attempts.result(), successes=successes.result())
            for action, (attempts, successes) in zip(wanted, counts, strict=True)
        ]

    async def stored(self) -> int:
        """How many incidents the collection holds."""
        return await self._count()

    async def _count(self, *conditions: models.Condition) -> int:
        count_filter = models.Filter(must=list(conditions)) if conditions else None
        result = await self._call(self._client.count(self._collection, count_filter=count_filter, exact=True))
        return result.count

    async def ensure_collection(self) -> None:
        """Create the collection if missing (with its indexes); raise EmbedderMismatch if another embedder made it."""
        if not await self._call(self._client.collection_exists(self._collection)):
            try:
                await self._call(
                    self._client.create_collection(
                        self._collection,
                        vectors_config=models.VectorParams(
                            size=self._embedder.dimension, distance=models.Distance.COSINE
                        ),
                        metadata={_META_MODEL: self._embedder.model_id, _META_DIMENSION: self._embedder.dimension},
                    )
                )
                log.info(
                    "incident collection created",
                    extra={"collection": self._collection, "model_id": self._embedder.model_id},
                )
            except Exception:
                # Another opener (server mode) may have created it meanwhile; anything else is a real failure.
                if not await self._call(self._client.collection_exists(self._collection)):
                    raise
        await self._check_embedder()
        await self._ensure_indexes()

    async def _check_embedder(self) -> None:
        info = await self._call(self._client.get_collection(self._collection))
        metadata = info.config.metadata or {}
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        expected = (self._embedder.model_id, self._embedder.dimension)
        found = (metadata.get(_META_MODEL), metadata.get(_META_DIMENSION))
        if found != expected or size != self._embedder.dimension:
            raise EmbedderMismatch(
                f"collection {self._collection!r} holds vectors of model {found[0]!r}, dimension {found[1]!r} "
                f"(vector size {size!r}), not {expected[0]!r}, dimension {expected[1]}: re-embed its incidents "
                "into a new collection, or configure that one's embedder"
            )

    async def _ensure_indexes(self) -> None:
        """Keyword indexes on the filtered fields and a bool one on `verified` (idempotent, on every open)."""
        schemas = {name: models.PayloadSchemaType.KEYWORD for name in FILTER_FIELDS}
        schemas["verified"] = models.PayloadSchemaType.BOOL
        with warnings.catch_warnings():
            # Local mode accepts the indexes but warns that it does not use them; a server does.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            for name, schema in schemas.items():
                await self._call(self._client.create_payload_index(self._collection, name, field_schema=schema))

    async def _call(self, awaitable: Any) -> Any:
        # Bounds a server's answer; local mode computes synchronously inside the call, which no timeout interrupts.
        async with asyncio.timeout(self._timeout_s):
            return await awaitable


def _equals(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _hit(point: models.ScoredPoint) -> KnowledgeHit:
    payload = dict(point.payload or {})
    return KnowledgeHit(
        doc_id=str(payload.get("incident_id", point.id)),
        score=point.score,
        title=str(payload.get("title", "")),
        type="incident",
        snippet=_snippet(payload),
        payload=payload,
    )


def _snippet(payload: Mapping[str, Any]) -> str:
    """One line for people: how it ended, why, what was done."""
    ending = f"{payload.get('outcome')}{' (verified)' if payload.get('verified') else ''}"
    actions = ", ".join(f"{a.get('action')} {a.get('target')}" for a in payload.get("actions") or [])
    parts = [ending, payload.get("hypothesis") or "", f"actions: {actions}" if actions else "", payload.get("summary")]
    text = "; ".join(p for p in parts if p)
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
