"""The `flush_connection_pool` action: an HTTP POST to the service's configured admin URL.

The step's target is the service; only services with an admin URL in the config can be flushed (others are
refused). The body is `{"action": "flush_connection_pool", "pool": <pool or null>}`; any 2xx answer is success.
Redirects are not followed. The `httpx.AsyncClient` is injected, so its owner decides on pooling and TLS.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from bus.events import PlanStep
from execution.adapters import ParamsCheckingAdapter
from execution.catalog import FlushConnectionPoolParams
from execution.results import ActionResult

log = logging.getLogger(__name__)


class AdminEndpointsConfig(BaseModel):
    """The admin URL of each service that exposes one."""

    model_config = ConfigDict(frozen=True)

    admin_urls: dict[str, AnyHttpUrl] = Field(default_factory=dict)
    # How much of the answer's body the result keeps.
    body_limit: int = Field(default=4096, ge=0)


class FlushConnectionPoolAdapter(ParamsCheckingAdapter[FlushConnectionPoolParams]):
    name = "flush_connection_pool"
    params_model = FlushConnectionPoolParams

    def __init__(self, config: AdminEndpointsConfig, client: httpx.AsyncClient) -> None:
        self._config = config
        self._client = client

    async def run(
        self, step: PlanStep, params: FlushConnectionPoolParams, *, timeout_s: float, started: float
    ) -> ActionResult:
        url = self._config.admin_urls.get(step.target)
        if url is None:
            return ActionResult.refused(f"no admin URL configured for service {step.target!r}", since=started)
        data: dict[str, object] = {"url": str(url)}
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._client.post(
                    str(url), json={"action": self.name, "pool": params.pool}, timeout=timeout_s
                )
        except (TimeoutError, httpx.TimeoutException):
            log.warning("admin call timed out", extra={"service": step.target, "timeout_s": timeout_s})
            return ActionResult.timed_out(timeout_s, since=started, data=data)
        except httpx.HTTPError as exc:
            log.warning("admin call failed", extra={"service": step.target, "error": str(exc)})
            return ActionResult.failed(f"POST {url}: {type(exc).__name__}: {exc}", since=started, data=data)
        data.update(status_code=response.status_code, body=response.text[: self._config.body_limit])
        if not response.is_success:
            return ActionResult.failed(f"POST {url} answered {response.status_code}", since=started, data=data)
        return ActionResult.succeeded(data, since=started)
