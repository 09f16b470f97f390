"""The model client as diagnosis uses it: every call recorded for the audit, and the token budget enforced.

`AuditedModelClient` wraps the configured client. Before each call it refuses to go on once the incident's token
budget is spent (`TokenBudgetSpent`, which ends the conversation: the caller falls back). After each call it
records what was sent that had not been sent before (system prompt, user prompts, tool results) and what came back
(text or tool calls), with the tokens the server counted. Nothing here counts tokens itself: that needs tiktoken's
encodings, a download this machine cannot make; `count_tokens`/`remaining_tokens` are refused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,  # type: ignore[attr-defined]
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from bus.events import LlmEntry
from knowledge.llm_client import usage_of
from knowledge.untrusted_text import cut_to

# Each recorded text is cut to this (the audit travels in an event and is stored with the incident).
MAX_ENTRY_CHARS = 6000


class TokenBudgetSpent(RuntimeError):
    """The incident's token budget is spent; no further model call is made."""


class AuditedModelClient(ChatCompletionClient):
    """Delegates to `inner`; records the conversation as `LlmEntry`s; enforces `max_tokens`."""

    def __init__(self, inner: ChatCompletionClient, *, max_tokens: int) -> None:
        self._inner = inner
        self._max_tokens = max_tokens
        self._sent = 0
        self.entries: list[LlmEntry] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.calls = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def note(self, kind: Literal["refused", "fallback", "cache_hit"], content: str, **data: Any) -> None:
        self.entries.append(LlmEntry(kind=kind, content=_cut(content), data=data))

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        if self.tokens >= self._max_tokens:
            raise TokenBudgetSpent(f"token budget of {self._max_tokens} spent ({self.tokens} used)")
        self._record_sent(messages)
        started = time.monotonic()
        result = await self._inner.create(
            messages, tools=tools, tool_choice=tool_choice, json_output=json_output,
            extra_create_args=extra_create_args, cancellation_token=cancellation_token,
        )  # fmt: skip
        self.calls += 1
        prompt, completion = usage_of(result)
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "duration_s": round(time.monotonic() - started, 3), "finish_reason": result.finish_reason}  # fmt: skip
        self.entries.extend(_reply_entries(result, usage))
        return result

    def _record_sent(self, messages: Sequence[LLMMessage]) -> None:
        # The agent sends the whole context each time: only what is new since the last call is recorded. The
        # model's own replies are recorded when they arrive.
        for message in messages[self._sent :]:
            if not isinstance(message, AssistantMessage):
                self.entries.extend(_sent_entries(message))
        self._sent = len(messages)

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        raise NotImplementedError("diagnosis does not stream")

    async def close(self) -> None:
        """The inner client is the agent's, shared by every incident: it closes it, not this wrapper."""

    def actual_usage(self) -> RequestUsage:
        return RequestUsage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)

    def total_usage(self) -> RequestUsage:
        return self.actual_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        raise NotImplementedError("token counting needs tiktoken's downloaded encodings; usage comes from the server")

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return max(0, self._max_tokens - self.tokens)

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[override]
        return self._inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        return self._inner.model_info


def _sent_entries(message: LLMMessage) -> list[LlmEntry]:
    if isinstance(message, SystemMessage):
        return [LlmEntry(kind="system", content=_cut(message.content))]
    if isinstance(message, UserMessage):
        content = message.content if isinstance(message.content, str) else "[non-text content]"
        return [LlmEntry(kind="user", content=_cut(content))]
    if isinstance(message, FunctionExecutionResultMessage):
        return [
            LlmEntry(kind="tool_result", content=_cut(result.content),
                     data={"name": result.name, "call_id": result.call_id, "is_error": bool(result.is_error)})
            for result in message.content
        ]  # fmt: skip
    return [LlmEntry(kind="user", content=_cut(str(message)))]


def _reply_entries(result: CreateResult, usage: dict[str, Any]) -> list[LlmEntry]:
    content = result.content
    if isinstance(content, str):
        return [LlmEntry(kind="assistant", content=_cut(content), data=usage)]
    calls = [call for call in content if isinstance(call, FunctionCall)]
    entries = [LlmEntry(kind="assistant", content=f"{len(calls)} tool call(s)", data=usage)]
    entries += [
        LlmEntry(kind="tool_call", content=_cut(call.arguments), data={"name": call.name, "call_id": call.id})
        for call in calls
    ]
    return entries


def _cut(text: str) -> str:
    return cut_to(text, MAX_ENTRY_CHARS, separator=" ")
