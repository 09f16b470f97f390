"""`opswarm approve|reject INCIDENT_ID` and `opswarm incidents list|show`: people's side of the swarm.

A decision is checked against the incident (it must await one), published as DecisionRecorded, and then the
command waits until coordination has applied it, so the answer printed is what happened, not what was asked.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import typer
from pymongo import AsyncMongoClient
from rich.console import Console

from agents.coordination.decisions import request_decision
from bus.incident_states import IncidentState
from bus.producer import EventPublisher
from deploy.incident_reports import actions_table, approval_panel, incidents_table, timeline_table
from deploy.llm_reports import llm_views
from deploy.settings import Settings
from knowledge.incident_store import IncidentRecord, IncidentStore

incidents_app = typer.Typer(no_args_is_help=True, help="Incidents as coordination recorded them.")
console = Console(highlight=False)
_POLL_S = 0.2


@asynccontextmanager
async def incident_store(settings: Settings) -> AsyncIterator[IncidentStore]:
    timeout_ms = int(settings.doctor_timeout_s * 1000)
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo_dsn(), serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        yield IncidentStore.in_database(client[settings.mongo_database], settings.incidents_collection)
    finally:
        await client.close()


async def decide(
    settings: Settings, incident_id: str, decision: Literal["approve", "reject"], by: str, comment: str, wait_s: float
) -> tuple[bool, str]:
    """Send the decision; wait until the incident left AWAITING_APPROVAL. (ok, message)."""
    async with incident_store(settings) as store:
        async with EventPublisher(settings.kafka, client_id="opswarm-cli") as publisher:
            result = await request_decision(store, publisher, incident_id, decision, by, comment)
        if result.status != "accepted":
            return False, result.message
        try:
            record = await asyncio.wait_for(_left_approval(store, incident_id), wait_s)
        except TimeoutError:
            return False, f"{result.message}, but coordination has not applied it within {wait_s:g} s"
        return True, f"{result.message}; incident is now {record.state}"


async def _left_approval(store: IncidentStore, incident_id: str) -> IncidentRecord:
    while True:
        record = await store.get(incident_id)
        if record is not None and record.state is not IncidentState.AWAITING_APPROVAL:
            return record
        await asyncio.sleep(_POLL_S)  # polling the store: the condition itself is what we wait for


def decision_command(decision: Literal["approve", "reject"]):
    def command(
        ctx: typer.Context,
        incident_id: str = typer.Argument(..., help="The incident whose pending action to decide."),
        by: str = typer.Option(None, "--by", help="Who decides (default: the current user)."),
        comment: str = typer.Option("", "--comment", "-m", help="Why; kept in the audit trail."),
        wait_s: float = typer.Option(30.0, "--wait", help="How long to wait for coordination to apply it."),
    ) -> None:
        settings: Settings = ctx.obj
        ok, message = asyncio.run(decide(settings, incident_id, decision, by or getpass.getuser(), comment, wait_s))
        typer.echo(f"{decision}: {message}", err=not ok)
        if not ok:
            raise typer.Exit(1)

    command.__doc__ = f"{decision.capitalize()} the action an incident awaits a decision on."
    return command


@incidents_app.command("list")
def list_incidents(
    ctx: typer.Context,
    state: IncidentState | None = typer.Option(None, "--state", help="Only incidents in this state."),
    limit: int = typer.Option(20, "--limit", min=1, max=500),
) -> None:
    """The most recently updated incidents."""

    async def read() -> list[IncidentRecord]:
        async with incident_store(ctx.obj) as store:
            return await store.list(state=state, limit=limit)

    console.print(incidents_table(asyncio.run(read())))


@incidents_app.command("show")
def show_incident(
    ctx: typer.Context,
    incident_id: str = typer.Argument(...),
    llm: bool = typer.Option(False, "--llm", help="Also print the model conversations: prompts, replies, tools."),
) -> None:
    """One incident: its timeline and its actions with their risk (and with --llm, what the model was asked)."""

    async def read() -> IncidentRecord | None:
        async with incident_store(ctx.obj) as store:
            return await store.get(incident_id)

    record = asyncio.run(read())
    if record is None:
        typer.echo(f"no incident {incident_id}", err=True)
        raise typer.Exit(1)
    console.print(timeline_table(record))
    console.print(actions_table(record))
    if (panel := approval_panel(record)) is not None:
        console.print(panel)
    if llm:
        for view in llm_views(record):
            console.print(view)
