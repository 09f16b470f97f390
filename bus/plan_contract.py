"""The JSON-schema contract of a remediation plan, for producers and consumers that are not Python.

`PLAN_SCHEMA` is generated from `bus.events.RemediationPlan`; the committed copy in
`bus/schemas/remediation_plan.schema.json` is what other languages read, and a unit test keeps the two equal.
After changing the plan models, regenerate the file with `python -m bus.plan_contract`.
`plan_contract_errors` checks a plan as it travels (a JSON object) with JSON Schema Draft 2020-12.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from bus.events import RemediationPlan

PLAN_SCHEMA: dict[str, Any] = RemediationPlan.model_json_schema()
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "remediation_plan.schema.json"

_VALIDATOR = Draft202012Validator(PLAN_SCHEMA)


def schema_text() -> str:
    """The schema file's exact content: sorted keys, two-space indent, a final newline."""
    return json.dumps(PLAN_SCHEMA, indent=2, sort_keys=True) + "\n"


def plan_contract_errors(plan: Mapping[str, Any] | Any) -> list[str]:
    """What makes `plan` (a decoded JSON value) break the contract, one sentence per problem; empty when it holds."""
    problems = []
    for error in sorted(_VALIDATOR.iter_errors(plan), key=lambda e: [str(part) for part in e.absolute_path]):
        where = "/".join(str(part) for part in error.absolute_path) or "<plan>"
        problems.append(f"{where}: {error.message}")
    return problems


def write_schema(path: Path = SCHEMA_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")


if __name__ == "__main__":
    write_schema()
