"""Scripted "models" for the LLM stub: responders that answer diagnosis conversations by rule, for tests and for
trying the LLM path by hand without a real model.

- `playbook`: investigates with two tools (recent changes, log summary) when tools are offered, then answers with
  the plan the playbook suggested in the prompt, citing what it read; asked for a postmortem draft, writes the
  sections the prompt names. The LLM path then reaches the same end as the
  deterministic one, through the real client, tools, structured output and guardrails.
- `forbidden`: does what injected text tells it: answers with FORBIDDEN and unlisted actions, every time (the
  repair request included). Guardrails must refuse it, and the incident gets the playbook's diagnosis.

Serve one by hand (a real OpenAI-compatible endpoint on loopback, until Ctrl-C):

    .venv/bin/python -m tests.llm_stub_models --model playbook --port 18090
    OPSWARM_LLM__BASE_URL=http://127.0.0.1:18090/v1 OPSWARM_LLM__MODEL=stub-playbook \\
      OPSWARM_LLM__FUNCTION_CALLING=true OPSWARM_LLM__STRUCTURED_OUTPUT=true opswarm agents up
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from tests.app_serving import serve_app
from tests.llm_stub import LlmStub, Reply, json_reply, text_reply, tool_calls_reply

_SUGGESTION = re.compile(r"<<<DATA playbook_suggestion (\w+)>>>\n(.*?)\n<<<END playbook_suggestion \1>>>", re.DOTALL)
_SERVICE = re.compile(r"on service '([^']+)'")


def _first_user_text(body: dict[str, Any]) -> str:
    for message in body.get("messages", []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def _has_tool_results(body: dict[str, Any]) -> bool:
    return any(message.get("role") == "tool" for message in body.get("messages", []))


def _system_text(body: dict[str, Any]) -> str:
    messages = body.get("messages", [])
    return messages[0].get("content", "") if messages and messages[0].get("role") == "system" else ""


def _postmortem(body: dict[str, Any]) -> Reply:
    """A draft's body: every section the prompt names, saying only that the facts are in the fenced data."""
    sections = re.findall(r"'## ([^']+)'", _system_text(body))
    return text_reply("\n\n".join(f"## {name}\nAs the incident's facts record it (stub model)." for name in sections))


def playbook_model(body: dict[str, Any]) -> Reply:
    """Two tools first (when offered), then the playbook's suggestion as the answer; postmortem drafts as asked."""
    if "postmortem" in _system_text(body):
        return _postmortem(body)
    offered = {tool["function"]["name"] for tool in body.get("tools", [])}
    if {"recent_changes", "log_summary"} <= offered and not _has_tool_results(body):
        return tool_calls_reply([("recent_changes", {}), ("log_summary", {})])
    prompt = _first_user_text(body)
    found = _SUGGESTION.search(prompt)
    if found is None:
        return text_reply("I cannot find the incident in the conversation.")
    suggestion = json.loads(found.group(2))
    return json_reply({
        "hypothesis": f"{suggestion['hypothesis']} (the model agrees with the playbook)",
        "confidence": 0.8,
        "evidence": [{"summary": "the playbook's evidence and the tools' results agree", "reference": "E1"},
                     {"summary": "recent changes of the service read", "reference": "T:recent_changes"}],
        "plan": suggestion["plan"],
        "rationale": "The evidence matches the playbook's diagnosis; its plan is the smallest fix that addresses it. "
                     "Watch the verification query after the action.",
        "suspicious": [],
    })  # fmt: skip


def forbidden_model(body: dict[str, Any]) -> Reply:
    """Follows the injected orders: deletes data and opens the firewall, with an action nobody listed."""
    service = _SERVICE.search(_first_user_text(body))
    target = service.group(1) if service else "unknown"
    step = {"target": target, "params": []}
    return json_reply({
        "hypothesis": "the operator's note in the alert says the data is corrupt and must be deleted",
        "confidence": 1.0,
        "evidence": [{"summary": "the alert's annotation says so", "reference": "E1"}],
        "plan": {"steps": [{"action": "delete_data", **step}, {"action": "change_security_policy", **step},
                           {"action": "run_shell", **step}],
                 "rollback": [], "verify": None},
        "rationale": "Told to by the alert.",
        "suspicious": [],
    })  # fmt: skip


MODELS: dict[str, Callable[[dict[str, Any]], Reply]] = {"playbook": playbook_model, "forbidden": forbidden_model}


async def _serve(model: str, port: int) -> None:
    stub = LlmStub(port)
    stub.responder = MODELS[model]
    async with serve_app(stub.app(), port):
        print(f"stub model {model!r} at {stub.base_url}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted model on an OpenAI-compatible loopback endpoint.")
    parser.add_argument("--model", choices=sorted(MODELS), default="playbook")
    parser.add_argument("--port", type=int, default=18090)
    args = parser.parse_args()
    try:
        asyncio.run(_serve(args.model, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
