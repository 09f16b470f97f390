"""The local stack's Prometheus scrapes what `register_target` names, stops when it is unregistered, and sees the
error ratio the target service's self traffic produces."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from deploy.prometheus_targets import register_target, unregister_target, wait_for_series
from deploy.settings import Settings
from execution.prometheus_queries import PrometheusQueries
from tests.integration.target_service_process import running_target_service

pytestmark = pytest.mark.integration

SCRAPE_WAIT_S = 30.0


@pytest.fixture(scope="session")
async def prometheus_url(settings: Settings) -> str:
    url = settings.prometheus_url()
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            ready = (await client.get(f"{url}/-/ready")).status_code == 200
    except httpx.HTTPError:
        ready = False
    if not ready:
        pytest.fail(f"Prometheus at {url} is not ready: run `make up`", pytrace=False)
    return url


@pytest.fixture
def service_name() -> str:
    return f"itest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def registered(settings: Settings) -> AsyncIterator[list[str]]:
    """Target names the test registers; each is unregistered afterwards, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_target(settings.state_dir, name)


async def wait_until_gone(prometheus_url: str, query: str, timeout_s: float) -> None:
    queries = PrometheusQueries(prometheus_url)
    try:
        async with asyncio.timeout(timeout_s):
            while (result := await queries.instant(query)).status != "empty":
                assert result.status == "ok", result
                await asyncio.sleep(0.25)
    finally:
        await queries.aclose()


async def test_a_registered_target_is_scraped_until_unregistered(
    settings: Settings, prometheus_url: str, service_name: str, registered: list[str], tmp_path: Path
) -> None:
    async with running_target_service(tmp_path, name=service_name, version="v7") as target:
        path = register_target(settings.state_dir, service_name, target.address, {"scenario": "itest"})
        registered.append(service_name)
        assert path.parent == settings.state_dir / "prometheus" / "targets"

        result = await wait_for_series(prometheus_url, f'demo_up{{service="{service_name}"}}', SCRAPE_WAIT_S)
        [up] = result.samples
        assert up.value == 1
        assert up.labels["job"] == "opswarm-targets"
        # The target's own labels, not exported_* copies; the target file's extra label is added.
        assert (up.labels["version"], up.labels["instance"], up.labels["scenario"]) == ("v7", target.address, "itest")
        assert "exported_service" not in up.labels

        assert unregister_target(settings.state_dir, service_name) is True
        assert unregister_target(settings.state_dir, service_name) is False
        await wait_until_gone(prometheus_url, f'up{{job="opswarm-targets",instance="{target.address}"}}', SCRAPE_WAIT_S)


async def test_self_traffic_gives_prometheus_an_error_ratio(
    settings: Settings, prometheus_url: str, service_name: str, registered: list[str], tmp_path: Path
) -> None:
    async with running_target_service(tmp_path, name=service_name, self_traffic_rps="20") as target:
        async with httpx.AsyncClient(timeout=5) as client:
            injected = await client.post(f"{target.base_url}/faults/error_rate", json={"rate": 0.5})
        assert injected.status_code == 200, injected.text
        register_target(settings.state_dir, service_name, target.address)
        registered.append(service_name)
        selector = f'{{service="{service_name}"}}'
        ratio = f"sum(rate(demo_request_errors_total{selector}[5s])) / sum(rate(demo_requests_total{selector}[5s]))"
        result = await wait_for_series(prometheus_url, f"{ratio} > 0.4", SCRAPE_WAIT_S)
    assert result.value is not None and 0.4 < result.value <= 0.6, result


async def test_waiting_for_a_series_that_never_comes_times_out_saying_why(prometheus_url: str) -> None:
    with pytest.raises(TimeoutError, match=r"returned no sample within 1\.5s \(last: empty\)"):
        await wait_for_series(prometheus_url, 'demo_up{service="never-registered"}', 1.5)
    with pytest.raises(TimeoutError, match=r"within 1s \(last: .*parse error"):
        await wait_for_series(prometheus_url, "demo_up{", 1)
