"""`kill -9` of any one agent in the middle of a scenario: the supervisor restarts it, the incident still reaches
its expected end, and the action runs once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import pytest

from bus.incident_states import IncidentState
from knowledge.incident_store import IncidentStore
from tests.e2e.conftest import LINE, Swarm, agent_pid, agent_restarts, executed_actions
from tests.integration.opswarm_cli import OPSWARM
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.e2e

# When each agent is killed: once the alert is out (monitoring), while diagnosing (diagnosis, knowledge,
# coordination), or while the executed action awaits its verification timer (execution).
KILL_AT: dict[str, IncidentState | None] = {
    "monitoring": None,
    "diagnosis": IncidentState.DIAGNOSING,
    "knowledge": IncidentState.DIAGNOSING,
    "coordination": IncidentState.DIAGNOSING,
    "execution": IncidentState.VERIFYING,
}


async def _kill_when(state_file: Path, agent: str, store: IncidentStore, lines: asyncio.Queue[str]) -> int:
    """Wait for the moment of `agent`, kill it with SIGKILL; its pid."""
    incident_id = None
    while incident_id is None:
        line = await lines.get()
        if KILL_AT[agent] is None and "alert fired" in line:
            break
        if (found := re.search(r"incident opened: (inc-[0-9a-f]+)", line)) is not None:
            incident_id = found.group(1)
    if incident_id is not None:
        wanted = KILL_AT[agent]

        async def reached() -> bool:
            record = await store.get(incident_id)
            return record is not None and record.state is wanted

        await eventually(reached, 60)
    pid = agent_pid(state_file, agent)
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.parametrize("agent", list(KILL_AT))
async def test_an_agent_killed_mid_scenario_is_restarted_and_the_incident_still_closes(
    swarm: Swarm, swarm_store: IncidentStore, agent: str
) -> None:
    restarts_before = agent_restarts(swarm.state_file, agent)
    process = await asyncio.create_subprocess_exec(
        str(OPSWARM), "scenario", "run", "service-down", "--timeout", "120",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **swarm.env},
    )  # fmt: skip
    assert process.stdout is not None
    lines: asyncio.Queue[str] = asyncio.Queue()
    output: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            text = raw.decode(errors="replace").rstrip("\n")
            output.append(text)
            await lines.put(text)

    reader = asyncio.create_task(read())
    try:
        killed = await asyncio.wait_for(_kill_when(swarm.state_file, agent, swarm_store, lines), 120)
        code = await asyncio.wait_for(process.wait(), 240)
        await reader
    finally:
        if process.returncode is None:
            process.kill()
    transcript = "\n".join(output)
    assert code == 0, transcript
    match = LINE.match(output[-1])
    assert match, transcript
    assert (match["state"], match["actions"], match["verified"]) == ("CLOSED", "1", "true"), transcript

    async def restarted() -> bool:
        state_file = swarm.state_file
        return agent_restarts(state_file, agent) > restarts_before and agent_pid(state_file, agent) != killed

    await eventually(restarted, 60)
    (incident_id,) = re.findall(r"incident opened: (inc-[0-9a-f]+)", transcript)
    record = await swarm_store.get(incident_id)
    assert record is not None and record.state is IncidentState.CLOSED
    assert executed_actions(record) == ["restart_process"]
    assert [e.detail["to"] for e in record.audit if e.action == "transition"].count("EXECUTING") == 1
