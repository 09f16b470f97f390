"""autogen's real OpenAI client, as `build_model_client` makes it, against an OpenAI-compatible HTTP stub on
loopback: text, tool calls, structured output, the failures a server can give (429, 500, malformed JSON, too
slow), and an AssistantAgent running one tool end to end. Plus the ReplayChatCompletionClient pattern for agent
logic without HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent, ToolCallRequestEvent
from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from autogen_ext.models.replay import ReplayChatCompletionClient
from pydantic import BaseModel

from knowledge.llm_client import LlmConfig, build_model_client, usage_of
from tests.llm_stub import NO_REPLY_LEFT, LlmStub, llm_stub, text_reply

pytestmark = pytest.mark.integration

QUESTION = [SystemMessage(content="You diagnose incidents."), UserMessage(content="checkout is failing", source="ops")]


class Plan(BaseModel):
    action: str
    target: str
    confidence: float


async def error_rate(service: str) -> str:
    """The error rate of a service over the last five minutes."""
    return f"{service}: 42% of requests fail"


ERROR_RATE = FunctionTool(error_rate, description="The error rate of a service over the last five minutes.")


@asynccontextmanager
async def stub_and_client(**overrides: Any) -> AsyncIterator[tuple[LlmStub, OpenAIChatCompletionClient]]:
    async with llm_stub() as stub:
        fields: dict[str, Any] = {
            "model": "stub-llm", "function_calling": True, "structured_output": True, "timeout_s": 5, **overrides
        }  # fmt: skip
        client = build_model_client(LlmConfig(base_url=stub.base_url, **fields))
        assert isinstance(client, OpenAIChatCompletionClient)
        assert stub.base_url.startswith("http://127.0.0.1:")
        try:
            yield stub, client
        finally:
            await client.close()


async def test_text_reply_and_its_usage() -> None:
    async with stub_and_client(temperature=0.0, max_tokens_per_reply=256) as (stub, client):
        stub.reply_text("The database connection pool is exhausted.")
        result = await client.create(QUESTION)
    assert result.content == "The database connection pool is exhausted."
    assert result.finish_reason == "stop"
    prompt, completion = usage_of(result)
    assert prompt > 0 and completion > 0
    (request,) = stub.requests
    assert (request["model"], request["temperature"], request["max_tokens"]) == ("stub-llm", 0.0, 256)
    assert [message["role"] for message in request["messages"]] == ["system", "user"]
    assert "tools" not in request and "response_format" not in request


async def test_known_openai_model_name_needs_no_capabilities() -> None:
    async with llm_stub() as stub:
        stub.served_model = "gpt-4o-mini-2024-07-18"  # what OpenAI answers for the alias: no mismatch warning
        client = build_model_client(LlmConfig(base_url=stub.base_url, model="gpt-4o-mini"))
        assert client is not None
        try:
            stub.reply_text("ok")
            assert (await client.create(QUESTION)).content == "ok"
        finally:
            await client.close()
    assert stub.requests[0]["model"] == "gpt-4o-mini"


async def test_tool_call_round_trip() -> None:
    async with stub_and_client() as (stub, client):
        stub.reply_tool_calls([("error_rate", {"service": "checkout"})])
        stub.reply_text("checkout fails 42% of requests: roll back the last deployment.")
        first = await client.create(QUESTION, tools=[ERROR_RATE])
        assert first.finish_reason == "function_calls"
        assert isinstance(first.content, list)
        (call,) = first.content
        assert isinstance(call, FunctionCall)
        assert (call.name, json.loads(call.arguments)) == ("error_rate", {"service": "checkout"})
        output = await ERROR_RATE.run_json(json.loads(call.arguments), cancellation_token=None)  # type: ignore[arg-type]
        followup = [
            *QUESTION,
            AssistantMessage(content=first.content, source="diagnosis"),
            FunctionExecutionResultMessage(
                content=[FunctionExecutionResult(call_id=call.id, content=str(output), is_error=False, name=call.name)]
            ),
        ]
        second = await client.create(followup, tools=[ERROR_RATE])
    assert second.content == "checkout fails 42% of requests: roll back the last deployment."
    first_request, second_request = stub.requests
    (tool,) = first_request["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "error_rate"
    assert tool["function"]["parameters"]["properties"]["service"]["type"] == "string"
    tool_message = second_request["messages"][-1]
    assert (tool_message["role"], tool_message["tool_call_id"]) == ("tool", call.id)
    assert tool_message["content"] == "checkout: 42% of requests fail"
    assert second_request["messages"][-2]["tool_calls"][0]["id"] == call.id


# autogen logs the parsed completion with model_dump(), which warns about the `parsed` field: harmless.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_structured_output_sends_a_strict_json_schema() -> None:
    async with stub_and_client() as (stub, client):
        stub.reply_json({"action": "rollback", "target": "checkout", "confidence": 0.8})
        result = await client.create(QUESTION, json_output=Plan)
    assert isinstance(result.content, str)
    assert Plan.model_validate_json(result.content) == Plan(action="rollback", target="checkout", confidence=0.8)
    response_format = stub.requests[0]["response_format"]
    assert response_format["type"] == "json_schema"
    schema = response_format["json_schema"]
    assert (schema["name"], schema["strict"]) == ("Plan", True)
    assert schema["schema"]["required"] == ["action", "target", "confidence"]
    assert schema["schema"]["additionalProperties"] is False


async def test_json_mode_sends_json_object() -> None:
    async with stub_and_client(structured_output=False, json_output=True) as (stub, client):
        stub.reply_json({"action": "restart", "target": "worker", "confidence": 0.5})
        result = await client.create(QUESTION, json_output=True)
    assert isinstance(result.content, str)
    assert Plan.model_validate_json(result.content).action == "restart"
    assert stub.requests[0]["response_format"] == {"type": "json_object"}


async def test_structured_output_refused_without_the_capability() -> None:
    async with stub_and_client(structured_output=False, json_output=False) as (stub, client):
        with pytest.raises(ValueError, match="structured output"):
            await client.create(QUESTION, json_output=Plan)
    assert stub.requests == []


async def test_structured_output_with_non_strict_tools_fails_before_sending() -> None:
    """The SDK's parse() only takes strict tools; autogen's FunctionTool is not strict by default."""
    async with stub_and_client() as (stub, client):
        with pytest.raises(ValueError, match="is not strict"):
            await client.create(QUESTION, tools=[ERROR_RATE], json_output=Plan)
    assert stub.requests == []


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [(429, {"Retry-After": "1"}, openai.RateLimitError), (500, {}, openai.InternalServerError)],
)
async def test_error_status_raises_at_once_without_retry(
    status: int, headers: dict[str, str], error: type[openai.APIStatusError]
) -> None:
    async with stub_and_client() as (stub, client):
        stub.reply_status(status, headers=headers)
        started = time.monotonic()
        with pytest.raises(error) as raised:
            await client.create(QUESTION)
        assert time.monotonic() - started < 1.0
    assert raised.value.status_code == status
    assert len(stub.requests) == 1


async def test_empty_script_fails_loudly() -> None:
    async with stub_and_client() as (stub, client):
        with pytest.raises(openai.InternalServerError, match=NO_REPLY_LEFT):
            await client.create(QUESTION)


async def test_malformed_body_raises() -> None:
    """Not an openai error: the SDK's json decoding fails (json.JSONDecodeError, a ValueError)."""
    async with stub_and_client() as (stub, client):
        stub.reply_malformed()
        with pytest.raises(json.JSONDecodeError):
            await client.create(QUESTION)
    assert len(stub.requests) == 1


async def test_slow_reply_times_out() -> None:
    async with stub_and_client(timeout_s=1) as (stub, client):
        stub.reply_slow(10, then=text_reply("too late"))
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await client.create(QUESTION)
        assert time.monotonic() - started < 1 + 2
    assert len(stub.requests) == 1


async def test_assistant_agent_runs_a_tool_against_the_stub() -> None:
    async with stub_and_client() as (stub, client):
        stub.reply_tool_calls([("error_rate", {"service": "checkout"})])
        stub.reply_text("Diagnosis: checkout fails 42% of requests after the last deployment.")
        agent = AssistantAgent(
            "diagnosis", model_client=client, tools=[ERROR_RATE], reflect_on_tool_use=True,
            system_message="You diagnose incidents. Use the tools.",
        )  # fmt: skip
        result = await agent.run(task="checkout is failing")
    kinds = [type(message) for message in result.messages]
    assert kinds == [TextMessage, ToolCallRequestEvent, ToolCallExecutionEvent, TextMessage]
    execution = result.messages[2]
    assert isinstance(execution, ToolCallExecutionEvent)
    assert execution.content[0].content == "checkout: 42% of requests fail" and not execution.content[0].is_error
    final = result.messages[-1]
    assert isinstance(final, TextMessage) and final.content.startswith("Diagnosis: checkout fails")
    assert final.models_usage is not None and final.models_usage.prompt_tokens > 0
    assert len(stub.requests) == 2 and stub.pending == 0
    assert stub.requests[1]["messages"][-1]["role"] == "tool"


async def test_responder_answers_when_the_script_is_empty() -> None:
    async with stub_and_client() as (stub, client):
        stub.reply_text("scripted")
        stub.responder = lambda request: text_reply(f"seen {len(request['messages'])} messages")
        assert (await client.create(QUESTION)).content == "scripted"
        assert (await client.create(QUESTION)).content == "seen 2 messages"


async def test_assistant_agent_on_replayed_outputs() -> None:
    """Agent logic without HTTP: ReplayChatCompletionClient returns the scripted results in order."""
    usage = RequestUsage(prompt_tokens=10, completion_tokens=5)
    client = ReplayChatCompletionClient(
        [
            CreateResult(
                finish_reason="function_calls", usage=usage, cached=False,
                content=[FunctionCall(id="call-1", name="error_rate", arguments='{"service": "checkout"}')],
            ),
            "Diagnosis: the last deployment of checkout.",
        ],
        model_info=ModelInfo(
            vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True
        ),
    )  # fmt: skip
    agent = AssistantAgent("diagnosis", model_client=client, tools=[ERROR_RATE], reflect_on_tool_use=True)
    result = await agent.run(task="checkout is failing")
    execution = result.messages[2]
    assert isinstance(execution, ToolCallExecutionEvent)
    assert execution.content[0].content == "checkout: 42% of requests fail"
    assert isinstance(result.messages[-1], TextMessage)
    assert result.messages[-1].content == "Diagnosis: the last deployment of checkout."
    assert len(client.create_calls) == 2
    assert [tool["name"] for tool in client.create_calls[0]["tools"]] == ["error_rate"]
