"""flush_connection_pool against a real HTTP server on 127.0.0.1 (a thread of this process)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bus.events import PlanStep
from execution.adapters.http_call import AdminEndpointsConfig, FlushConnectionPoolAdapter
from tests.services import free_tcp_port


@dataclass
class AdminServer:
    """Answers POST /ok with 200, /broken with 503, /slow only once `release` is set; records request bodies."""

    base_url: str
    bodies: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def admin_server() -> Iterator[AdminServer]:
    server_state: AdminServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server looks for
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server_state.bodies.append({"path": self.path, **body})
            if self.path == "/slow":
                server_state.release.wait(10)
            status = 503 if self.path == "/broken" else 200
            payload = b'{"flushed": 12}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state = AdminServer(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_state
    server_state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def adapter_for(server: AdminServer, client: httpx.AsyncClient) -> FlushConnectionPoolAdapter:
    config = AdminEndpointsConfig(
        admin_urls={
            "checkout": f"{server.base_url}/ok",
            "payments": f"{server.base_url}/broken",
            "search": f"{server.base_url}/slow",
            "ledger": f"http://127.0.0.1:{free_tcp_port()}/flush",  # nothing listens there
        }
    )
    return FlushConnectionPoolAdapter(config, client)


def flush(service: str, **params: object) -> PlanStep:
    return PlanStep(action="flush_connection_pool", target=service, params=params)


async def test_flush_posts_to_the_service_admin_url(admin_server: AdminServer, client: httpx.AsyncClient) -> None:
    result = await adapter_for(admin_server, client).execute(flush("checkout", pool="primary"), timeout_s=5)
    assert result.status == "succeeded", result
    assert result.data["status_code"] == 200 and json.loads(result.data["body"]) == {"flushed": 12}
    assert admin_server.bodies == [{"path": "/ok", "action": "flush_connection_pool", "pool": "primary"}]


@pytest.mark.parametrize(
    ("service", "status", "error"),
    [
        ("payments", "failed", "answered 503"),
        ("ledger", "failed", "ConnectError"),
        ("search", "timed_out", "no result within 0.3s"),
        ("unknown", "refused", "no admin URL configured for service 'unknown'"),
    ],
)
async def test_flush_reports_what_went_wrong(
    admin_server: AdminServer, client: httpx.AsyncClient, service: str, status: str, error: str
) -> None:
    result = await adapter_for(admin_server, client).execute(flush(service), timeout_s=0.3)
    assert result.status == status and error in (result.error or ""), result
