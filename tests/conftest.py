"""Session fixtures: the settings of the test process and the real services every integration test uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import ExitStack

import pytest

from bus.admin import ensure_topics
from deploy.doctor import run_doctor
from tests.services import (
    ServiceEndpoints,
    SuiteSettings,
    docker_engine_answers,
    local_stack_endpoints,
    start_containers,
)

_TOPICS_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def settings() -> SuiteSettings:
    return SuiteSettings()


@pytest.fixture(scope="session")
async def services(settings: SuiteSettings) -> AsyncIterator[ServiceEndpoints]:
    containers = ExitStack()
    try:
        if settings.test_stack != "local" and await asyncio.to_thread(docker_engine_answers, settings):
            endpoints = await asyncio.to_thread(start_containers, containers)
            where = "containers do not answer"
        else:
            endpoints = local_stack_endpoints(settings)
            where = "local stack not running: run `make up`"
        await _require_answers(endpoints, settings, where)
        yield endpoints
    finally:
        await asyncio.to_thread(containers.close)


async def _require_answers(endpoints: ServiceEndpoints, settings: SuiteSettings, where: str) -> None:
    """Create the topics, then a doctor round trip through every service; fail the session clearly if not."""
    service_settings = endpoints.settings(settings)
    topics_error = ""
    try:
        await asyncio.wait_for(ensure_topics(service_settings.kafka), _TOPICS_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the doctor below says what is wrong
        topics_error = f"ensuring topics failed: {type(exc).__name__}: {exc}"
    results = await run_doctor(service_settings)
    problems = [f"{r.component}: {r.state}: {r.reason}" for r in results if not r.ok]
    if problems or topics_error:
        pytest.fail("\n".join([where, *problems, topics_error]).strip(), pytrace=False)
