"""The demo target service as a real process: each fault over HTTP, its metrics, and the real execution adapters
(clear_disk, flush_connection_pool) undoing what the faults did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bus.events import PlanStep
from execution.adapters.disk_cleanup import ClearDiskAdapter, DiskCleanupConfig
from execution.adapters.http_call import AdminEndpointsConfig, FlushConnectionPoolAdapter
from tests.integration.target_service_process import TargetProcess, running_target_service, sample, scrape

pytestmark = pytest.mark.integration

HOUR = 3600.0
LABELS = {"service": "demo", "version": "v1"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[TargetProcess]:
    async with running_target_service(tmp_path) as target:
        yield target


def flush_step(**params: object) -> PlanStep:
    return PlanStep(action="flush_connection_pool", target="demo", params=params)


async def codes_of(client: httpx.AsyncClient, target: TargetProcess, count: int) -> list[int]:
    return [(await client.get(f"{target.base_url}/")).status_code for _ in range(count)]


async def test_work_answers_and_is_counted(client: httpx.AsyncClient, target: TargetProcess) -> None:
    assert await codes_of(client, target, 3) == [200, 200, 200]
    metrics = await scrape(client, target)
    assert sample(metrics, "demo_requests_total", code="200", **LABELS) == 3
    assert sample(metrics, "demo_request_errors_total", **LABELS) == 0
    assert sample(metrics, "demo_request_duration_seconds_count", **LABELS) == 3
    for gauge, value in [("demo_up", 1), ("demo_build_info", 1), ("demo_pool_size", 10), ("demo_pool_in_use", 0)]:
        assert sample(metrics, gauge, **LABELS) == value, gauge
    health = await client.get(f"{target.base_url}/healthz")
    assert health.json() == {**LABELS, "status": "ok"}


async def test_error_rate_fails_that_share_of_requests(client: httpx.AsyncClient, target: TargetProcess) -> None:
    injected = await client.post(f"{target.base_url}/faults/error_rate", json={"rate": 0.25})
    assert injected.status_code == 200, injected.text
    assert sorted(await codes_of(client, target, 8)) == [200] * 6 + [500] * 2
    metrics = await scrape(client, target)
    assert sample(metrics, "demo_requests_total", code="500", **LABELS) == 2
    assert sample(metrics, "demo_request_errors_total", **LABELS) == 2
    assert (await client.delete(f"{target.base_url}/faults/error_rate")).status_code == 200
    assert await codes_of(client, target, 4) == [200] * 4


async def test_latency_slows_the_work_down(client: httpx.AsyncClient, target: TargetProcess) -> None:
    await client.post(f"{target.base_url}/faults/latency", json={"ms": 300})
    started = time.monotonic()
    assert await codes_of(client, target, 1) == [200]
    assert time.monotonic() - started >= 0.3
    metrics = await scrape(client, target)
    assert sample(metrics, "demo_request_duration_seconds_bucket", le="0.25", **LABELS) == 0
    assert sample(metrics, "demo_request_duration_seconds_bucket", le="0.5", **LABELS) == 1
    assert (await client.get(f"{target.base_url}/faults")).json()["latency_ms"] == 300
    await client.delete(f"{target.base_url}/faults/latency")
    assert await codes_of(client, target, 1) == [200]
    metrics = await scrape(client, target)
    assert sample(metrics, "demo_request_duration_seconds_bucket", le="0.25", **LABELS) == 1


async def test_a_faulty_version_serves_errors(client: httpx.AsyncClient, tmp_path: Path) -> None:
    async with running_target_service(tmp_path, name="shop", version="v2-bad") as target:
        assert await codes_of(client, target, 2) == [500, 500]
        metrics = await scrape(client, target)
    assert sample(metrics, "demo_request_errors_total", service="shop", version="v2-bad") == 2
    assert sample(metrics, "demo_build_info", service="shop", version="v2-bad") == 1


async def test_crash_answers_then_exits_with_code_1(client: httpx.AsyncClient, target: TargetProcess) -> None:
    answer = await client.post(f"{target.base_url}/faults/crash")
    assert answer.status_code == 202 and answer.json() == {"kind": "crash", "exit_code": 1}
    assert await asyncio.wait_for(target.process.wait(), 10) == 1
    with pytest.raises(httpx.ConnectError):
        await client.get(f"{target.base_url}/healthz")


async def test_disk_fill_ages_files_so_clear_disk_removes_only_those(
    client: httpx.AsyncClient, target: TargetProcess, tmp_path: Path
) -> None:
    params = {"files": 3, "size_bytes": 1000, "age_s": 2 * HOUR, "fresh_files": 2}
    filled = await client.post(f"{target.base_url}/faults/disk_fill", json=params)
    assert filled.status_code == 200 and filled.json()["files_written"] == 5, filled.text
    now = time.time()
    ages = sorted(now - path.stat().st_mtime for path in target.data_dir.iterdir())
    assert len(ages) == 5 and ages[:2] == pytest.approx([0, 0], abs=60) and min(ages[2:]) >= 2 * HOUR - 60, ages
    assert sample(await scrape(client, target), "demo_disk_used_bytes", **LABELS) == 5000

    clear_disk = ClearDiskAdapter(DiskCleanupConfig(allowed_roots=[tmp_path]))
    step = PlanStep(action="clear_disk", target="demo", params={"path": str(target.data_dir), "min_age_s": HOUR})
    result = await clear_disk.execute(step, timeout_s=10)
    assert result.status == "succeeded" and result.data["files_deleted"] == 3, result
    assert result.data["skipped_recent"] == 2
    assert sample(await scrape(client, target), "demo_disk_used_bytes", **LABELS) == 2000

    removed = await client.delete(f"{target.base_url}/faults/disk_fill")
    assert removed.json()["files_removed"] == 2
    assert sample(await scrape(client, target), "demo_disk_used_bytes", **LABELS) == 0


async def test_pool_exhaustion_until_flushed_by_the_admin_call(
    client: httpx.AsyncClient, target: TargetProcess
) -> None:
    assert (await client.post(f"{target.base_url}/faults/pool_exhaustion")).status_code == 200
    assert await codes_of(client, target, 2) == [503, 503]
    metrics = await scrape(client, target)
    assert sample(metrics, "demo_pool_in_use", **LABELS) == sample(metrics, "demo_pool_size", **LABELS) == 10
    assert sample(metrics, "demo_requests_total", code="503", **LABELS) == 2

    admin = AdminEndpointsConfig(admin_urls={"demo": f"{target.base_url}/admin/pool/flush"})
    flush = FlushConnectionPoolAdapter(admin, client)
    wrong_pool = await flush.execute(flush_step(pool="replica"), timeout_s=5)
    assert wrong_pool.status == "failed" and "answered 404" in (wrong_pool.error or ""), wrong_pool
    result = await flush.execute(flush_step(), timeout_s=5)
    assert result.status == "succeeded", result
    assert result.data["status_code"] == 200 and '"flushed":10' in result.data["body"]
    assert await codes_of(client, target, 2) == [200, 200]
    assert sample(await scrape(client, target), "demo_pool_in_use", **LABELS) == 0


async def test_fault_requests_it_cannot_take_are_refused(client: httpx.AsyncClient, target: TargetProcess) -> None:
    assert (await client.post(f"{target.base_url}/faults/meltdown")).status_code == 404
    assert (await client.post(f"{target.base_url}/faults/error_rate", json={"rate": 2})).status_code == 422
    assert (await client.post(f"{target.base_url}/faults/latency", json={"ms": 5, "x": 1})).status_code == 422
    assert (await client.post(f"{target.base_url}/faults/crash", json={"now": True})).status_code == 422
    assert (await client.delete(f"{target.base_url}/faults/crash")).status_code == 409
    assert target.process.returncode is None


async def test_clear_all_faults(client: httpx.AsyncClient, target: TargetProcess) -> None:
    for kind, params in [("latency", {"ms": 50}), ("error_rate", {"rate": 1}), ("pool_exhaustion", None)]:
        assert (await client.post(f"{target.base_url}/faults/{kind}", json=params)).status_code == 200
    assert await codes_of(client, target, 1) == [503]
    assert (await client.delete(f"{target.base_url}/faults")).status_code == 200
    state = (await client.get(f"{target.base_url}/faults")).json()
    assert (state["latency_ms"], state["error_rate"], state["pool"]["in_use"]) == (0, 0, 0)
    assert await codes_of(client, target, 1) == [200]


async def test_self_traffic_moves_the_counters_without_http(client: httpx.AsyncClient, tmp_path: Path) -> None:
    async with running_target_service(tmp_path, self_traffic_rps="50") as target:
        await client.post(f"{target.base_url}/faults/error_rate", json={"rate": 0.5})
        deadline = time.monotonic() + 20
        while True:
            metrics = await scrape(client, target)
            errors = sample(metrics, "demo_requests_total", code="500", **LABELS) or 0
            if errors >= 20:
                break
            assert time.monotonic() < deadline, f"self traffic: {errors} errors in 20s at 50 rps, rate 0.5"
            await asyncio.sleep(0.1)
        # No request of / was made over HTTP: every one counted came from the process itself.
        assert (sample(metrics, "demo_requests_total", code="200", **LABELS) or 0) >= errors - 1
        assert sample(metrics, "demo_request_errors_total", **LABELS) == errors
