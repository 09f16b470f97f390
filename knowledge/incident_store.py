"""Incident records in MongoDB: the document, its timeline and its audit trail.

Coordination is the only writer. Every write names the version it read (optimistic concurrency: a concurrent
writer makes it a `conflict`, to re-read and retry) and the event that caused it (idempotency: the same event
applied twice is a `duplicate` and changes nothing).

The one atomic step is an insert with a unique `_id`: each version of an incident is a snapshot document
`<incident_id>:<version>` in `<name>_versions`, so of two writers of the same version exactly one wins. (A
conditional update_one on a version field would be simpler, but FerretDB v1 loses updates under it: concurrent
writers of one version all "succeed". A unique insert is atomic on FerretDB and MongoDB alike.) The newest
snapshot is the truth; the `<name>` collection holds a copy of each incident's newest snapshot for listing and
queries, brought up to date after every write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import DuplicateKeyError

from bus.events import AlertRef
from bus.incident_states import IncidentState, check_transition

log = logging.getLogger(__name__)

# How many applied event ids a record remembers for idempotency (redeliveries come soon after the original).
APPLIED_EVENTS_KEPT = 500


def _now() -> datetime:
    return datetime.now(UTC)


class TimelineEntry(BaseModel):
    """Something that happened to the incident, for people."""

    model_config = ConfigDict(frozen=True)

    at: datetime = Field(default_factory=_now)
    kind: str
    summary: str
    actor: str
    event_id: str | None = None


class AuditEntry(BaseModel):
    """A decision and its grounds, for the record: transitions (and refusals), risk scores, approvals."""

    model_config = ConfigDict(frozen=True)

    at: datetime = Field(default_factory=_now)
    actor: str
    action: str
    detail: dict[str, Any] = Field(default_factory=dict)
    event_id: str | None = None


class IncidentRecord(BaseModel):
    incident_id: str
    state: IncidentState = IncidentState.NEW
    version: int = 1
    title: str
    service: str
    severity: str
    fingerprint: str
    namespace: str | None = None
    opened_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    alerts: list[AlertRef] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    audit: list[AuditEntry] = Field(default_factory=list)
    applied_event_ids: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class WriteOutcome:
    """What a write did. `record` is the record after the write (or as found, when nothing was written)."""

    status: Literal["applied", "duplicate", "conflict", "missing", "refused"]
    record: IncidentRecord | None
    reason: str = ""


class MongoCollection(Protocol):
    """The part of pymongo's AsyncCollection the store uses."""

    async def insert_one(self, document: dict[str, Any]) -> Any: ...
    async def find_one(self, filter: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any] | None: ...
    async def replace_one(self, filter: dict[str, Any], replacement: dict[str, Any], upsert: bool = False) -> Any: ...
    async def create_index(self, keys: Any, **kwargs: Any) -> str: ...
    def find(self, filter: dict[str, Any], **kwargs: Any) -> Any: ...


class IncidentStore:
    def __init__(self, incidents: MongoCollection, versions: MongoCollection, *, timeout_s: float = 10.0) -> None:
        self._incidents = incidents
        self._versions = versions
        self._timeout_s = timeout_s

    @classmethod
    def in_database(cls, database: Any, name: str = "incidents", *, timeout_s: float = 10.0) -> IncidentStore:
        return cls(database[name], database[f"{name}_versions"], timeout_s=timeout_s)

    async def ensure_indexes(self) -> None:
        for keys in ("state", "service", "updated_at", "fingerprint"):
            await self._call(self._incidents.create_index(keys))
        await self._call(self._versions.create_index([("incident_id", 1), ("version", -1)]))

    async def create(self, record: IncidentRecord, *, event_id: str) -> WriteOutcome:
        """Insert a new incident; the event that opened it counts as applied."""
        record = record.model_copy(update={"applied_event_ids": [event_id], "version": 1})
        return await self._write(record, event_id)

    async def get(self, incident_id: str) -> IncidentRecord | None:
        """The newest version of an incident."""
        snapshot = await self._call(
            self._versions.find_one({"incident_id": incident_id}, sort=[("version", -1)])
        )
        return None if snapshot is None else _from_document(snapshot["record"])

    async def list(self, *, state: IncidentState | None = None, limit: int = 50) -> list[IncidentRecord]:
        """Incidents, most recently updated first (from the listing copy)."""
        query: dict[str, Any] = {} if state is None else {"state": state.value}
        cursor = self._incidents.find(query, sort=[("updated_at", -1)], limit=limit)
        documents = await self._call(cursor.to_list(length=limit))
        return [_from_document(d) for d in documents]

    async def apply(
        self,
        incident_id: str,
        *,
        expected_version: int,
        event_id: str,
        fields: dict[str, Any] | None = None,
        timeline: Sequence[TimelineEntry] = (),
        audit: Sequence[AuditEntry] = (),
    ) -> WriteOutcome:
        """Write the next version if the incident is still at `expected_version` and `event_id` is new to it."""
        current = await self.get(incident_id)
        if current is None:
            return WriteOutcome("missing", None, f"no incident {incident_id}")
        if event_id in current.applied_event_ids:
            return WriteOutcome("duplicate", current, f"event {event_id} was applied already")
        if current.version != expected_version:
            return WriteOutcome("conflict", current, _conflict(current.version, expected_version))
        changed = IncidentRecord.model_validate(
            {
                **current.model_dump(),
                **(fields or {}),
                "version": current.version + 1,
                "updated_at": _now(),
                "timeline": [*current.timeline, *timeline],
                "audit": [*current.audit, *audit],
                "applied_event_ids": [*current.applied_event_ids, event_id][-APPLIED_EVENTS_KEPT:],
            }
        )
        return await self._write(changed, event_id, expected_version=expected_version)

    async def transition(
        self,
        record: IncidentRecord,
        target: IncidentState,
        *,
        event_id: str,
        actor: str,
        fields: dict[str, Any] | None = None,
        timeline: Sequence[TimelineEntry] = (),
    ) -> WriteOutcome:
        """Move the incident to `target` if the lifecycle allows it; otherwise record the refusal in the audit."""
        check = check_transition(record.state, target)
        detail = {"from": record.state.value, "to": target.value, "reason": check.reason}
        if not check.allowed:
            refusal = AuditEntry(actor=actor, action="transition_refused", event_id=event_id, detail=detail)
            log.warning("transition refused", extra={"incident_id": record.incident_id, "reason": check.reason})
            outcome = await self.apply(
                record.incident_id, expected_version=record.version, event_id=event_id, audit=[refusal]
            )
            status = "refused" if outcome.status == "applied" else outcome.status
            return WriteOutcome(status, outcome.record, check.reason)
        entry = AuditEntry(actor=actor, action="transition", event_id=event_id, detail=detail)
        step = TimelineEntry(kind="state", summary=check.reason, actor=actor, event_id=event_id)
        return await self.apply(
            record.incident_id,
            expected_version=record.version,
            event_id=event_id,
            fields={**(fields or {}), "state": target},
            timeline=[step, *timeline],
            audit=[entry],
        )

    async def _write(self, record: IncidentRecord, event_id: str, *, expected_version: int = 0) -> WriteOutcome:
        snapshot = {
            "_id": f"{record.incident_id}:{record.version:010d}",
            "incident_id": record.incident_id,
            "version": record.version,
            "record": _to_document(record),
        }
        try:
            await self._call(self._versions.insert_one(snapshot))
        except DuplicateKeyError:
            winner = await self.get(record.incident_id)
            if winner is not None and event_id in winner.applied_event_ids:
                return WriteOutcome("duplicate", winner, f"event {event_id} was applied already")
            found = winner.version if winner is not None else 0
            return WriteOutcome("conflict", winner, _conflict(found, expected_version))
        await self._refresh_listing(record)
        return WriteOutcome("applied", record)

    async def _refresh_listing(self, record: IncidentRecord) -> None:
        """Copy the newest snapshot to the listing collection (never replacing a newer copy)."""
        listed = await self._call(self._incidents.find_one({"_id": record.incident_id}, {"version": 1}))
        if listed is None or listed["version"] < record.version:
            await self._call(
                self._incidents.replace_one({"_id": record.incident_id}, _to_document(record), upsert=True)
            )

    async def _call(self, awaitable: Any) -> Any:
        return await asyncio.wait_for(awaitable, self._timeout_s)


def _conflict(found: int, expected: int) -> str:
    return f"the incident is at version {found}, not the expected {expected}: re-read and retry"


def _to_document(record: IncidentRecord) -> dict[str, Any]:
    document = record.model_dump()
    document["_id"] = document.pop("incident_id")
    document["state"] = record.state.value
    return document


def _from_document(document: dict[str, Any]) -> IncidentRecord:
    document = dict(document)
    document["incident_id"] = document.pop("_id")
    for entries in ("timeline", "audit"):
        for entry in document.get(entries, []):
            _utc(entry, "at")
    _utc(document, "opened_at")
    _utc(document, "updated_at")
    return IncidentRecord.model_validate(document)


def _utc(document: dict[str, Any], key: str) -> None:
    """BSON dates come back naive (UTC): mark them so."""
    value = document.get(key)
    if isinstance(value, datetime) and value.tzinfo is None:
        document[key] = value.replace(tzinfo=UTC)
