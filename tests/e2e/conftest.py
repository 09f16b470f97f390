"""The whole swarm for end-to-end tests: `opswarm agents up` on the local stack, stopped again afterwards."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from bus.admin import delete_namespace
from knowledge.incident_store import IncidentRecord, IncidentStore
from tests.integration.opswarm_cli import run_opswarm
from tests.services import ServiceEndpoints, SuiteSettings

pytestmark = pytest.mark.e2e

LINE = re.compile(
    r"^scenario (?P<name>[a-z-]+): state=(?P<state>[A-Z_]+) actions=(?P<actions>\d+) approvals=(?P<approvals>\d+) "
    r"forbidden_blocked=(?P<forbidden>\d+) verified=(?P<verified>true|false) seconds=(?P<seconds>[0-9.]+)$"
)


@dataclass(frozen=True)
class Swarm:
    """A running swarm: its supervisor's state file, and the environment that points `opswarm` at its topics."""

    state_file: Path
    env: dict[str, str]


@pytest.fixture(scope="package")
async def swarm(services: ServiceEndpoints, settings: SuiteSettings) -> AsyncIterator[Swarm]:
    """A swarm of this checkout's code in a topic namespace of its own (a developer's running swarm is stopped
    first: they share the agents' ports and state directory). Its own namespace means it starts on empty topics,
    whatever earlier runs left on the broker. `opswarm up` in that namespace moves the stack's alert bridge there,
    so that Alertmanager's alerts reach this swarm; afterwards the bridge goes back to the configured namespace and
    the swarm's topics are deleted."""
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    env = {"OPSWARM_KAFKA__TOPIC_NAMESPACE": namespace}
    down = await run_opswarm("agents", "down", timeout_s=120)
    assert down.returncode == 0, down.describe()
    try:
        stack = await run_opswarm("up", env=env, timeout_s=180)
        assert stack.returncode == 0, stack.describe()
        up = await run_opswarm("agents", "up", env=env, timeout_s=180)
        assert up.returncode == 0, up.describe()
        yield Swarm(settings.state_dir / "agents" / "state.json", env)
    finally:
        down = await run_opswarm("agents", "down", timeout_s=120)
        assert down.returncode == 0, down.describe()
        back = await run_opswarm("up", timeout_s=180)
        assert back.returncode == 0, back.describe()
        config = services.settings(settings).kafka.model_copy(update={"topic_namespace": namespace})
        await delete_namespace(config)


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
