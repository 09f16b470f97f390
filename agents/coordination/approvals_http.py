"""Coordination's HTTP endpoints for people: incidents (read) and decisions on pending actions (write).

`GET /incidents` lists them, each with `pending`: the action it awaits a decision on (if any), its risk and the
approver's brief (why this action, its risk, what similar incidents did), which informs and never decides.
`POST /incidents/{id}/approve` and `/reject` (body: optional `comment`, optional `action_id` to decide only if that
action is still the pending one) answer 202 once the decision is on the bus, 404 for an unknown incident and 409
when nothing (or another action) awaits a decision.

Every call is authenticated with an API token (`Authorization: Bearer <token>`, or the `opswarm_token` cookie the
approvals page sets): GET needs the viewer role, a decision the approver role, and the decision is recorded as
the token's name (`via="api"`). No token, an unknown one, or no tokens configured at all: 401; too low a role: 403.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from agents.coordination.decisions import Publisher, pending_action, request_decision
from bus.incident_states import IncidentState
from knowledge.incident_store import IncidentRecord, IncidentStore
from scheduler.escalations.access_tokens import ApiToken, Identity, Role, identify

log = logging.getLogger(__name__)

TOKEN_COOKIE = "opswarm_token"
NO_TOKENS = (
    "the approvals API has no tokens configured, so it refuses every call: set OPSWARM_API_TOKENS to a list of "
    '{"name", "role": viewer|approver|admin, "sha256"} (the sha256 of each token)'
)
NO_CREDENTIALS = f"authentication required: send 'Authorization: Bearer <token>' or the {TOKEN_COOKIE} cookie"
UNKNOWN_TOKEN = "the token presented is not one this agent knows (revoked, mistyped or from another deployment)"
_STATUS = {"missing": 404, "not_awaiting": 409}
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class DecisionBody(BaseModel):
    """A decision's body: the comment, and the action decided on (if given, only while it is still pending).
    Who decides is the token's identity: a `decided_by` sent along is ignored."""

    comment: str = Field(default="", max_length=2000)
    action_id: str | None = Field(default=None, max_length=200)


def presented_token(request: Request) -> str | None:
    """The bearer token of the request, else its `opswarm_token` cookie, else None."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(TOKEN_COOKIE) or None


def refusal(tokens: Sequence[ApiToken], identity: Identity | None, role: Role, doing: str) -> tuple[int, str] | None:
    """(401 or 403, why) when `identity` may not do what needs `role`; None when it may."""
    if not tokens:
        return 401, NO_TOKENS
    if identity is None:
        return 401, NO_CREDENTIALS
    if not identity.may(role):
        return 403, f"{identity.name} has the {identity.role} role: {doing} needs the {role} role"
    return None


def requires(tokens: Sequence[ApiToken], role: Role, doing: str) -> Callable[[Request], Awaitable[Identity]]:
    """A FastAPI dependency: the caller's identity when it has `role`, else HTTPException 401/403."""
    frozen = tuple(tokens)

    async def dependency(request: Request) -> Identity:
        presented = presented_token(request)
        identity = identify(frozen, presented)
        refused = refusal(frozen, identity, role, doing)
        if refused is not None:
            status, message = refused
            if status == 401 and frozen and presented:
                message = UNKNOWN_TOKEN
            log.info("approvals api call refused", extra={"status": status, "path": request.url.path})
            raise HTTPException(status, message, headers=_CHALLENGE if status == 401 else None)
        assert identity is not None
        return identity

    return dependency


def approvals_router(store: IncidentStore, publisher: Publisher, tokens: Sequence[ApiToken] = ()) -> APIRouter:
    """The incidents API; with no `tokens` it refuses every call (401)."""
    viewer = Depends(requires(tokens, "viewer", "reading incidents"))
    approver = Depends(requires(tokens, "approver", "approving or rejecting"))
    router = APIRouter(prefix="/incidents", tags=["incidents"])

    @router.get("")
    async def list_incidents(limit: int = 50, _: Identity = viewer) -> list[dict[str, Any]]:
        records = await store.list(limit=min(max(limit, 1), 500))
        return [
            {"incident_id": r.incident_id, "state": r.state, "title": r.title, "service": r.service,
             "severity": r.severity, "updated_at": r.updated_at.isoformat(), "pending": awaiting_decision(r)}
            for r in records
        ]  # fmt: skip

    @router.get("/{incident_id}")
    async def show_incident(incident_id: str, _: Identity = viewer) -> dict[str, Any]:
        record = await store.get(incident_id)
        if record is None:
            raise HTTPException(404, f"no incident {incident_id}")
        document = record.model_dump(mode="json", exclude={"applied_event_ids"})
        document["facts"].pop("outbox", None)
        document["pending"] = awaiting_decision(record)
        return document

    async def decide(
        incident_id: str, body: DecisionBody | None, decision: Literal["approve", "reject"], identity: Identity
    ) -> dict:
        body = body or DecisionBody()
        result = await request_decision(
            store, publisher, incident_id, decision, identity.name, body.comment, via="api", action_id=body.action_id
        )
        if result.status != "accepted":
            raise HTTPException(_STATUS[result.status], result.message)
        return {
            "status": "accepted", "message": result.message, "action_id": result.action_id,
            "decided_by": identity.name,
        }  # fmt: skip

    @router.post("/{incident_id}/approve", status_code=202)
    async def approve(incident_id: str, body: DecisionBody | None = None, identity: Identity = approver) -> dict:
        return await decide(incident_id, body, "approve", identity)

    @router.post("/{incident_id}/reject", status_code=202)
    async def reject(incident_id: str, body: DecisionBody | None = None, identity: Identity = approver) -> dict:
        return await decide(incident_id, body, "reject", identity)

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
