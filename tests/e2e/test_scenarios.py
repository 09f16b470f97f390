"""Every scenario on the real stack and the live swarm, through `opswarm scenario run NAME` as a user runs it;
then the incidents as coordination recorded them: final state, timeline, audit, and no forbidden action run."""

from __future__ import annotations

import re

import pytest

from knowledge.incident_store import IncidentRecord, IncidentStore
from tests.e2e.conftest import LINE, executed_actions
from tests.integration.opswarm_cli import CliResult, run_opswarm

pytestmark = pytest.mark.e2e

FORBIDDEN = {"delete_data", "failover_database", "change_security_policy"}


def scenario_line(result: CliResult) -> dict[str, str]:
    match = LINE.match(result.last_line)
    assert match, result.describe()
    return match.groupdict()


def incident_ids(result: CliResult) -> list[str]:
    return re.findall(r"incident opened: (inc-[0-9a-f]+)", result.stdout)


async def records(store: IncidentStore, result: CliResult) -> list[IncidentRecord]:
    found = [await store.get(i) for i in incident_ids(result)]
    assert found and all(found), result.describe()
    return [r for r in found if r is not None]


def transitions(record: IncidentRecord) -> list[str]:
    return [e.detail["to"] for e in record.audit if e.action == "transition"]


@pytest.mark.parametrize(
    ("name", "state", "actions", "approvals", "forbidden", "verified", "path"),
    [
        ("service-down", "CLOSED", 1, 0, 0, "true", ["DIAGNOSING", "PLANNED", "EXECUTING", "VERIFYING", "RESOLVED", "CLOSED"]),
        ("disk-full", "CLOSED", 1, 0, 0, "true", ["DIAGNOSING", "PLANNED", "EXECUTING", "VERIFYING", "RESOLVED", "CLOSED"]),
        ("bad-deploy", "CLOSED", 1, 1, 0, "true",
         ["DIAGNOSING", "PLANNED", "AWAITING_APPROVAL", "EXECUTING", "VERIFYING", "RESOLVED", "CLOSED"]),
        ("db-corruption", "PARKED", 0, 0, 1, "false", ["DIAGNOSING", "PLANNED", "PARKED"]),
    ],
)  # fmt: skip
async def test_scenario(
    swarm, swarm_store: IncidentStore, name: str, state: str, actions: int, approvals: int, forbidden: int,  # noqa: ANN001
    verified: str, path: list[str],
) -> None:  # fmt: skip
    result = await run_opswarm("scenario", "run", name, env=swarm.env, timeout_s=240)
    assert result.returncode == 0, result.describe()
    line = scenario_line(result)
    assert (line["name"], line["state"], line["verified"]) == (name, state, verified)
    assert (int(line["actions"]), int(line["approvals"]), int(line["forbidden"])) == (actions, approvals, forbidden)
    (record,) = await records(swarm_store, result)
    assert transitions(record)[: len(path)] == path
    assert record.state.value in (state, "CLOSED")  # alerts resolving later may close a parked incident
    assert not FORBIDDEN & set(executed_actions(record))
    kinds = {e.kind for e in record.timeline}
    assert {"opened", "state", "diagnosis", "risk"} <= kinds
    assert any(e.action == "risk_scored" for e in record.audit)
    if approvals:
        decisions = [e for e in record.audit if e.action == "decision"]
        assert [(d.actor, d.detail["decision"]) for d in decisions] == [("scenario-operator", "approve")]
    if name == "db-corruption":
        assert [a["status"] for a in record.facts["actions"]] == ["forbidden"]
        assert "EXECUTING" not in transitions(record)


async def test_restart_storm_refuses_the_fourth_restart(swarm, swarm_store: IncidentStore) -> None:  # noqa: ANN001
    result = await run_opswarm("scenario", "run", "restart-storm", env=swarm.env, timeout_s=300)
    assert result.returncode == 0, result.describe()
    line = scenario_line(result)
    assert (line["state"], line["actions"], line["approvals"]) == ("PARKED", "3", "0")
    found = await records(swarm_store, result)
    assert [r.state.value for r in found[:3]] == ["CLOSED"] * 3
    assert [executed_actions(r) for r in found] == [["restart_process"]] * 3 + [[]]
    refusal = [e for e in found[3].audit if e.action == "arbitration"]
    assert refusal and refusal[-1].detail["status"] == "rate_limited"
    assert any("rate limit" in e.summary for e in found[3].timeline if e.kind == "escalation")
