"""Coordination's HTTP endpoints for people: incidents (read) and decisions on pending actions (write).

`GET /incidents` lists them, each with `pending`: the action it awaits a decision on (if any), its risk and the
approver's brief (why this action, its risk, what similar incidents did), which informs and never decides.
`POST /incidents/{id}/approve` and `/reject` answer 202 once the decision is on the bus, 404 for an unknown
incident and 409 when nothing awaits a decision. Authentication and roles come with the escalation flow; until
then the server listens on loopback only (the default http_host).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from agents.coordination.decisions import Publisher, pending_action, request_decision
from bus.incident_states import IncidentState
from knowledge.incident_store import IncidentRecord, IncidentStore

_STATUS = {"missing": 404, "not_awaiting": 409}


class DecisionBody(BaseModel):
    decided_by: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)


def approvals_router(store: IncidentStore, publisher: Publisher) -> APIRouter:
    router = APIRouter(prefix="/incidents", tags=["incidents"])

    @router.get("")
    async def list_incidents(limit: int = 50) -> list[dict[str, Any]]:
        records = await store.list(limit=min(max(limit, 1), 500))
        return [
            {"incident_id": r.incident_id, "state": r.state, "title": r.title, "service": r.service,
             "severity": r.severity, "updated_at": r.updated_at.isoformat(), "pending": awaiting_decision(r)}
            for r in records
        ]  # fmt: skip

    @router.get("/{incident_id}")
    async def show_incident(incident_id: str) -> dict[str, Any]:
        record = await store.get(incident_id)
        if record is None:
            raise HTTPException(404, f"no incident {incident_id}")
        document = record.model_dump(mode="json", exclude={"applied_event_ids"})
        document["facts"].pop("outbox", None)
        document["pending"] = awaiting_decision(record)
        return document

    async def decide(incident_id: str, body: DecisionBody, decision: Literal["approve", "reject"]) -> dict:
        result = await request_decision(store, publisher, incident_id, decision, body.decided_by, body.comment)
        if result.status != "accepted":
            raise HTTPException(_STATUS[result.status], result.message)
        return {
            "status": "accepted",
            "message": result.message,
            "action_id": result.action_id,
        }

    @router.post("/{incident_id}/approve", status_code=202)
    async def approve(incident_id: str, body: DecisionBody) -> dict:
        return await decide(incident_id, body, "approve")

    @router.post("/{incident_id}/reject", status_code=202)
    async def reject(incident_id: str, body: DecisionBody) -> dict:
        return await decide(incident_id, body, "reject")

    return router


def awaiting_decision(record: IncidentRecord) -> dict[str, Any] | None:
    """The action an incident awaits a decision on, with its risk and the approver's brief; None when none."""
    entry = pending_action(record) if record.state is IncidentState.AWAITING_APPROVAL else None
    if entry is None:
        return None
    step, risk = entry.get("step", {}), entry.get("risk", {})
    return {
        "action_id": entry["action_id"], "action": step.get("action"), "target": step.get("target"),
        "tier": risk.get("tier"), "score": risk.get("score"), "brief": entry.get("brief", ""),
    }  # fmt: skip
