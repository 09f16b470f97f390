"""Real local receivers for the escalation channels' tests: a FastAPI app under uvicorn standing in for Slack,
a webhook receiver and PagerDuty (it records every request and answers from a script), and an aiosmtpd SMTP server
collecting mail."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from tests.app_serving import serve_app
from tests.services import free_tcp_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every POST; answers from `script` first (a status, or None: never answer), else per path."""

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    script: deque[tuple[int | None, Any, dict[str, str]]] = field(default_factory=deque)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, status: int, times: int = 1, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.script.extend([(status, body, dict(headers or {}))] * times)

    def hang(self, times: int = 1) -> None:
        self.script.extend([(None, None, {})] * times)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def on(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]

    def app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/{path:path}")
        async def receive(path: str, request: Request) -> Response:
            body = await request.body()
            self.received.append(Received(path, dict(request.headers), body, time.monotonic()))
            if self.script:
                status, content, headers = self.script.popleft()
                if status is None:
                    await self.closing.wait()
                    return PlainTextResponse("shutting down", status_code=503)
                if content == "echo":
                    content = body.decode()
                return PlainTextResponse(str(content or f"scripted {status}"), status_code=status, headers=headers)
            if path == "slack":
                return PlainTextResponse("ok")
            if path == "pagerduty":
                answer = {"status": "success", "message": "Event processed", "dedup_key": json.loads(body)["dedup_key"]}
                return JSONResponse(answer, status_code=202)
            return JSONResponse({"received": True})

        return app


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    port = free_tcp_port()
    stub = Receiver()
    async with serve_app(stub.app(), port) as base_url:
        stub.base_url = base_url
        try:
            yield stub
        finally:
            stub.closing.set()


@dataclass
class MailHandler:
    """aiosmtpd's handler: keeps each message; refuses `refuse` recipients (550) and the first `busy` DATA (451)."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    busy: int = 0
    data_commands: int = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: N802 - aiosmtpd's
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.data_commands += 1
        if self.busy:
            self.busy -= 1
            return "451 4.3.0 try again later"
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


@asynccontextmanager
async def smtp_server() -> AsyncIterator[tuple[MailHandler, int]]:
    handler = MailHandler()
    port = free_tcp_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    try:
        yield handler, port
    finally:
        await asyncio.to_thread(controller.stop)
