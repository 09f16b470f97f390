"""The live swarm with a model configured: the agents restarted with OPSWARM_LLM__* pointing at an OpenAI-compatible
stub served by this test (a scripted model on loopback), then `opswarm scenario run bad-deploy` as a user runs it.

- A model that investigates and agrees with the playbook: the same verified end as the deterministic path, the
  diagnosis is the model's, and `opswarm incidents show ID --llm` prints the conversation.
- A model that answers with forbidden and unlisted actions: none of them runs, the audit says what was refused, and
  the incident still ends as the deterministic path ends it.

Afterwards the agents are restarted without a model, for the other tests of the package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from deploy.agents_cli import HTTP_PORTS
from knowledge.incident_store import IncidentRecord, IncidentStore
from tests.e2e.conftest import executed_actions
from tests.e2e.test_scenarios import FORBIDDEN, records, scenario_line
from tests.integration.opswarm_cli import run_opswarm
from tests.integration.redis_keys import eventually
from tests.llm_stub import LlmStub, llm_stub
from tests.llm_stub_models import forbidden_model, playbook_model

pytestmark = pytest.mark.e2e

KNOWLEDGE_URL = f"http://127.0.0.1:{HTTP_PORTS['knowledge']}"


async def restart_agents(env: dict[str, str]) -> None:
    down = await run_opswarm("agents", "down", timeout_s=120)
    assert down.returncode == 0, down.describe()
    up = await run_opswarm("agents", "up", env=env, timeout_s=180)
    assert up.returncode == 0, up.describe()


@pytest.fixture(scope="module")
async def model(swarm) -> AsyncIterator[LlmStub]:  # noqa: ANN001
    async with llm_stub() as stub:
        env = {
            **swarm.env, "OPSWARM_LLM__BASE_URL": stub.base_url, "OPSWARM_LLM__MODEL": "stub-model",
            "OPSWARM_LLM__FUNCTION_CALLING": "true", "OPSWARM_LLM__STRUCTURED_OUTPUT": "true",
        }  # fmt: skip
        await restart_agents(env)
        try:
            yield stub
        finally:
            await restart_agents(swarm.env)


async def bad_deploy(
    env: dict[str, str], store: IncidentStore, *options: str
) -> tuple[dict[str, str], IncidentRecord]:
    """`opswarm scenario run bad-deploy`: its last line's figures, and its incident as coordination recorded it."""
    result = await run_opswarm("scenario", "run", "bad-deploy", *options, env=env, timeout_s=240)
    assert result.returncode == 0, result.describe()
    (record,) = await records(store, result)
    return scenario_line(result), record


async def test_bad_deploy_with_a_model_reaches_the_verified_end_and_shows_the_conversation(
    swarm, model: LlmStub, swarm_store: IncidentStore  # noqa: ANN001
) -> None:
    model.responder = playbook_model
    line, record = await bad_deploy(swarm.env, swarm_store)
    assert (line["state"], line["actions"], line["approvals"], line["verified"]) == ("CLOSED", "1", "1", "true")
    assert executed_actions(record) == ["rollback_deploy"]
    assert record.facts["diagnosis"]["method"] == "llm"
    [transcript] = record.facts["llm"]
    assert (transcript["status"], transcript["model"]) == ("accepted", "stub-model")
    assert [e["data"]["name"] for e in transcript["entries"] if e["kind"] == "tool_call"] == [
        "recent_changes", "log_summary"]
    assert any(e.action == "llm_diagnosis" and e.detail["status"] == "accepted" for e in record.audit)

    shown = await run_opswarm("incidents", "show", record.incident_id, "--llm", env=swarm.env)
    assert shown.returncode == 0, shown.describe()
    for expected in ("LLM conversation 1", "diagnosis by stub-model: accepted", "[system]", "[user]",
                     "[tool_call recent_changes]", "[tool_result log_summary]", "(the model agrees with the playbook)"):
        assert expected in shown.stdout, shown.describe()  # fmt: skip

    # On close, knowledge asked the model for the postmortem draft and stored it in the knowledge base.
    draft = f"postmortem-drafts/{record.incident_id}.md"

    async def draft_stored() -> bool:
        async with httpx.AsyncClient(timeout=5) as client:
            listed = (await client.get(f"{KNOWLEDGE_URL}/kb/documents")).json()["documents"]
        return any(document["source"] == draft for document in listed)

    await eventually(draft_stored, 60)
    asked = [r for r in model.requests if "postmortem" in r["messages"][0]["content"]]
    assert any(record.incident_id in r["messages"][1]["content"] for r in asked)


async def test_a_model_that_plans_forbidden_actions_gets_none_of_them_run(
    swarm, model: LlmStub, swarm_store: IncidentStore  # noqa: ANN001
) -> None:
    model.responder = forbidden_model
    line, record = await bad_deploy(swarm.env, swarm_store)
    # The model's plan never reached coordination: the playbook's rollback did, approved and verified.
    assert (line["state"], line["forbidden"], line["verified"]) == ("CLOSED", "0", "true")
    assert not FORBIDDEN & set(executed_actions(record)) and "run_shell" not in executed_actions(record)
    assert executed_actions(record) == ["rollback_deploy"]
    assert record.facts["diagnosis"]["method"] == "deterministic"
    [transcript] = record.facts["llm"]
    assert transcript["status"] == "fallback" and transcript["reason"].startswith("the answer was refused twice")
    [refused] = [e for e in record.audit if e.action == "llm_refused"]
    assert refused.detail["refused"] == [
        "action 'delete_data' is FORBIDDEN: never proposed by the model",
        "action 'change_security_policy' is FORBIDDEN: never proposed by the model",
        "action 'run_shell' is not in the catalog",
    ]
