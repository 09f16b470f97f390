"""Escalations on the live swarm: the agents restarted with the quick scenario policy (three 5 s tiers, then deny),
then `opswarm scenario run bad-deploy` answered on the approvals page, and left unanswered.

Afterwards the agents are restarted with the default policy, for the other tests of the package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deploy.operator_credentials import OPERATOR
from deploy.settings import CHECKOUT_DIR
from knowledge.incident_store import IncidentStore
from tests.e2e.test_llm_scenarios import bad_deploy, restart_agents

pytestmark = pytest.mark.e2e

POLICY_FILE = CHECKOUT_DIR / "deploy" / "escalations.scenario.yaml"


@pytest.fixture(scope="module")
async def quick_policy(swarm) -> AsyncIterator[dict[str, str]]:  # noqa: ANN001
    env = {**swarm.env, "OPSWARM_ESCALATION_POLICY_FILE": str(POLICY_FILE)}
    await restart_agents(env)
    try:
        yield env
    finally:
        await restart_agents(swarm.env)


async def test_bad_deploy_approved_on_the_approvals_page(
    quick_policy: dict[str, str], swarm_store: IncidentStore
) -> None:
    line, record = await bad_deploy(quick_policy, swarm_store, "--approve-via", "web")
    assert (line["state"], line["approvals"], line["verified"]) == ("CLOSED", "1", "true")
    [decision] = [e for e in record.audit if e.action == "decision"]
    assert (decision.detail["by"], decision.detail["via"], decision.detail["decision"]) == (OPERATOR, "web", "approve")
    assert record.facts["escalation"]["policy"] == "scenario-quick"


async def test_bad_deploy_left_unanswered_walks_every_tier_and_is_denied(
    quick_policy: dict[str, str], swarm_store: IncidentStore
) -> None:
    line, record = await bad_deploy(quick_policy, swarm_store, "--approve-via", "none")
    assert (line["state"], line["actions"], line["approvals"], line["verified"]) == ("PARKED", "0", "0", "false")
    steps = [e.summary for e in record.timeline if e.kind == "escalation" and e.actor == "escalation-policy"]
    assert steps == [
        "asked tier 1, on-call (oncall@example.invalid)",
        "reminder 1 to on-call (oncall@example.invalid)",
        "escalated to tier 2, secondary (secondary@example.invalid)",
        "escalated to tier 3, incident-commander (ic@example.invalid)",
        steps[-1],
    ]
    assert steps[-1].startswith("nobody answered within") and steps[-1].endswith("denied by policy scenario-quick")
    assert [a["status"] for a in record.facts["actions"]] == ["rejected"]
    assert [e.detail["outcome"] for e in record.audit if e.action == "approval_expired"] == ["deny"]
