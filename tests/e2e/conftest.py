"""The whole swarm for end-to-end tests: `opswarm agents up` on the local stack, stopped again afterwards."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from knowledge.incident_store import IncidentRecord, IncidentStore
from tests.integration.opswarm_cli import run_opswarm
from tests.services import ServiceEndpoints, SuiteSettings

pytestmark = pytest.mark.e2e

LINE = re.compile(
    r"^scenario (?P<name>[a-z-]+): state=(?P<state>[A-Z_]+) actions=(?P<actions>\d+) approvals=(?P<approvals>\d+) "
    r"forbidden_blocked=(?P<forbidden>\d+) verified=(?P<verified>true|false) seconds=(?P<seconds>[0-9.]+)$"
)


@pytest.fixture(scope="package")
async def swarm(services: ServiceEndpoints, settings: SuiteSettings) -> AsyncIterator[Path]:
    """A swarm of this checkout's code (a running one is stopped first: it would be stale, and the integration
    tests run agents of their own on the same topics); the supervisor's state file once all five agents beat."""
    down = await run_opswarm("agents", "down", timeout_s=120)
    assert down.returncode == 0, down.describe()
    up = await run_opswarm("agents", "up", timeout_s=180)
    assert up.returncode == 0, up.describe()
    try:
        yield settings.state_dir / "agents" / "state.json"
    finally:
        down = await run_opswarm("agents", "down", timeout_s=120)
        assert down.returncode == 0, down.describe()


def agent_pid(state_file: Path, agent: str) -> int:
    state = json.loads(state_file.read_text())
    pid = state["agents"][agent]["pid"]
    assert pid, f"{agent} has no pid in {state_file}: {state['agents'][agent]}"
    return int(pid)


def agent_restarts(state_file: Path, agent: str) -> int:
    return int(json.loads(state_file.read_text())["agents"][agent]["restarts"])


@pytest.fixture(scope="package")
async def swarm_store(services: ServiceEndpoints, settings: SuiteSettings) -> AsyncIterator[IncidentStore]:
    client: AsyncMongoClient = AsyncMongoClient(services.mongo_url, serverSelectionTimeoutMS=5000)
    try:
        yield IncidentStore.in_database(client[settings.mongo_database], settings.incidents_collection)
    finally:
        await client.close()


def executed_actions(record: IncidentRecord) -> list[str]:
    return [a["step"]["action"] for a in record.facts.get("actions", []) if a["status"] == "executed"]
