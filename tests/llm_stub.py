"""An OpenAI-compatible chat completions server for tests: FastAPI under uvicorn in the test's own process, on a
free loopback port, answering from a script.

    async with llm_stub() as stub:
        stub.reply_tool_calls([("get_metric", {"name": "cpu"})])
        stub.reply_text("done")
        client = build_model_client(LlmConfig(base_url=stub.base_url, ...))

Each `POST /v1/chat/completions` takes the next scripted reply; when the script is empty the `responder` (if
set) answers from the request, else the stub answers 500 "stub: no scripted reply left" so a test that asks more
than it scripted fails loudly. Every request body is kept in `stub.requests`, in order. Replies carry what real
servers send: `id`, `model` (the request's unless `served_model` is set), `created`, `finish_reason` and a `usage`
block with rough token counts.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from autogen_core.models import ChatCompletionClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from knowledge.llm_client import LlmConfig, build_model_client
from tests.app_serving import serve_app
from tests.services import free_tcp_port

NO_REPLY_LEFT = "stub: no scripted reply left"


@dataclass(frozen=True)
class TextReply:
    text: str


@dataclass(frozen=True)
class ToolCallsReply:
    calls: tuple[tuple[str, dict[str, Any]], ...]
    text: str | None = None


@dataclass(frozen=True)
class StatusReply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MalformedReply:
    body: str = '{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mess'


@dataclass(frozen=True)
class SlowReply:
    seconds: float
    then: Reply


Reply = TextReply | ToolCallsReply | StatusReply | MalformedReply | SlowReply
Responder = Callable[[dict[str, Any]], "Reply | Awaitable[Reply]"]


def text_reply(text: str) -> TextReply:
    return TextReply(text)


def json_reply(value: Any) -> TextReply:
    return TextReply(json.dumps(value))


def tool_calls_reply(calls: Sequence[tuple[str, dict[str, Any]]], text: str | None = None) -> ToolCallsReply:
    return ToolCallsReply(tuple((name, dict(arguments)) for name, arguments in calls), text)


def rough_tokens(value: Any) -> int:
    """About what a tokenizer would say: four characters a token. No tokenizer needed."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return max(1, len(text) // 4)


class LlmStub:
    """The server's script, what it received, and where it listens."""

    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.requests: list[dict[str, Any]] = []
        self.responder: Responder | None = None
        # The `model` of every reply; None: the request's.
        self.served_model: str | None = None
        self._script: deque[Reply] = deque()
        self._ids = itertools.count(1)
        self._closing = asyncio.Event()

    # The script, consumed in order.
    def reply(self, reply: Reply) -> None:
        self._script.append(reply)

    def reply_text(self, text: str) -> None:
        self.reply(text_reply(text))

    def reply_json(self, value: Any) -> None:
        self.reply(json_reply(value))

    def reply_tool_calls(self, calls: Sequence[tuple[str, dict[str, Any]]], text: str | None = None) -> None:
        self.reply(tool_calls_reply(calls, text))

    def reply_status(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.reply(StatusReply(status, body, dict(headers or {})))

    def reply_malformed(self) -> None:
        self.reply(MalformedReply())

    def reply_slow(self, seconds: float, then: Reply | None = None) -> None:
        self.reply(SlowReply(seconds, then if then is not None else text_reply("slow reply")))

    @property
    def pending(self) -> int:
        """Scripted replies not yet taken."""
        return len(self._script)

    def app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            name = self.served_model or "stub-llm"
            return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "stub"}]}

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "stub: the request body is not JSON")
            self.requests.append(body)
            if body.get("stream"):
                return _error(400, "stub: streaming is not supported")
            return await self._answer(body, await self._next_reply(body))

        return app

    async def _next_reply(self, body: dict[str, Any]) -> Reply | None:
        if self._script:
            return self._script.popleft()
        if self.responder is None:
            return None
        reply = self.responder(body)
        return await reply if inspect.isawaitable(reply) else reply

    async def _answer(self, body: dict[str, Any], reply: Reply | None) -> Response:
        if reply is None:
            return _error(500, NO_REPLY_LEFT)
        if isinstance(reply, SlowReply):
            try:
                await asyncio.wait_for(self._closing.wait(), reply.seconds)
                return _error(503, "stub: shutting down")
            except TimeoutError:
                return await self._answer(body, reply.then)
        if isinstance(reply, StatusReply):
            content = reply.body if reply.body is not None else _error_body(reply.status, f"stub: {reply.status}")
            return JSONResponse(content, status_code=reply.status, headers=reply.headers)
        if isinstance(reply, MalformedReply):
            return Response(reply.body, status_code=200, media_type="application/json")
        return JSONResponse(self._completion(body, reply))

    def _completion(self, body: dict[str, Any], reply: TextReply | ToolCallsReply) -> dict[str, Any]:
        number = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(reply, TextReply):
            message["content"] = reply.text
            finish_reason = "stop"
        else:
            message["content"] = reply.text
            message["tool_calls"] = [
                {
                    "id": f"call_{number}_{index}", "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }  # fmt: skip
                for index, (name, arguments) in enumerate(reply.calls)
            ]
            finish_reason = "tool_calls"
        prompt_tokens = rough_tokens(body.get("messages", [])) + (rough_tokens(body["tools"]) if "tools" in body else 0)
        completion_tokens = rough_tokens({k: v for k, v in message.items() if v is not None})
        return {
            "id": f"chatcmpl-stub-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_model or body.get("model", "stub-llm"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(_error_body(status, message), status_code=status)


@asynccontextmanager
async def llm_stub() -> AsyncIterator[LlmStub]:
    """The stub served on a free loopback port. Stopped afterwards (slow replies end first)."""
    port = free_tcp_port()
    stub = LlmStub(port)
    async with serve_app(stub.app(), port):
        try:
            yield stub
        finally:
            stub._closing.set()


def stub_config(stub: LlmStub, **overrides: Any) -> LlmConfig:
    """The LLM settings that point at `stub`: a model name autogen does not know, with tools and structured output."""
    fields: dict[str, Any] = {
        "model": "stub-llm", "function_calling": True, "structured_output": True, "timeout_s": 5, **overrides
    }  # fmt: skip
    return LlmConfig(base_url=stub.base_url, **fields)


@asynccontextmanager
async def stub_with_client(**overrides: Any) -> AsyncIterator[tuple[LlmStub, ChatCompletionClient, LlmConfig]]:
    """A stub, autogen's real client for it (as the agents build it) and its settings; the client closed after."""
    async with llm_stub() as stub:
        config = stub_config(stub, **overrides)
        client = build_model_client(config)
        assert client is not None
        try:
            yield stub, client, config
        finally:
            await client.close()
