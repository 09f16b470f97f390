"""The plan's JSON-schema contract: the committed file is the generated schema, and it accepts what the model does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bus.events import PlanStep, RemediationPlan, VerifySpec
from bus.plan_contract import PLAN_SCHEMA, SCHEMA_PATH, plan_contract_errors, schema_text


def test_the_committed_schema_file_is_the_generated_schema() -> None:
    committed = SCHEMA_PATH.read_text(encoding="utf-8")

    assert json.loads(committed) == PLAN_SCHEMA, "regenerate it: python -m bus.plan_contract"
    assert committed == schema_text()


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(PLAN_SCHEMA)


@pytest.mark.parametrize(
    "plan",
    [
        RemediationPlan(steps=[PlanStep(action="restart_process", target="checkout")]),
        RemediationPlan(
            steps=[PlanStep(action="rollback_deploy", target="checkout", params={"to_version": "1.2.0"}, retries=2)],
            rollback=[PlanStep(action="rollback_deploy", target="checkout", params={"to_version": "1.3.0"})],
            verify=VerifySpec(query='max(error_ratio{service="checkout"})', threshold=0.05, window_s=30),
        ),
    ],
)
def test_a_plan_the_model_builds_keeps_the_contract(plan: RemediationPlan) -> None:
    assert plan_contract_errors(plan.model_dump(mode="json")) == []


STEP = {"action": "restart_process", "target": "checkout"}


@pytest.mark.parametrize(
    ("plan", "problem"),
    [
        ({"steps": []}, "steps: [] should be non-empty"),
        ({}, "<plan>: 'steps' is a required property"),
        ({"steps": [{"action": "restart_process"}]}, "steps/0: 'target' is a required property"),
        ({"steps": [{**STEP, "timeout_s": 0}]}, "steps/0/timeout_s: 0 is less than or equal to the minimum of 0"),
        ({"steps": [{**STEP, "retries": 9}]}, "steps/0/retries: 9 is greater than the maximum of 5"),
        ({"steps": [{**STEP, "params": []}]}, "steps/0/params: [] is not of type 'object'"),
        ({"steps": [STEP], "verify": {"query": "up", "threshold": "1"}}, "verify: {'query': 'up', 'threshold': '1'}"),
        ({"steps": [STEP], "verify": {"query": "up", "threshold": 1, "comparator": "!="}}, "verify: "),
        ("restart everything", "<plan>: 'restart everything' is not of type 'object'"),
    ],
)
def test_a_plan_that_breaks_the_contract_says_where(plan: Any, problem: str) -> None:
    problems = plan_contract_errors(plan)

    assert problems, "the plan should have broken the contract"
    assert problems[0].startswith(problem)
