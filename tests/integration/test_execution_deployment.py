"""scale and rollback_deploy on the local deployment platform, with real replica processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus.events import PlanStep
from execution.adapters.deployment_actions import RollbackDeployAdapter, ScaleAdapter
from execution.adapters.deployment_platform import DeploymentRefused, LocalDeploymentPlatform
from execution.adapters.process_supervisor import ProcessSupervisor
from tests.integration.execution_support import RUN_UNTIL_KILLED, process_alive, process_argv, python_argv


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[LocalDeploymentPlatform]:
    supervisor = ProcessSupervisor(tmp_path / "run", stop_timeout_s=5.0)
    platform = LocalDeploymentPlatform(supervisor, tmp_path / "deployments")
    await platform.deploy("web", "v1", python_argv(RUN_UNTIL_KILLED, "web", "v1"), env={"VERSION": "v1"})
    await platform.deploy("web", "v2", python_argv(RUN_UNTIL_KILLED, "web", "v2"), env={"VERSION": "v2"})
    yield platform
    for name in supervisor.names():
        await supervisor.stop(name, timeout_s=1.0)


def running_versions(platform: LocalDeploymentPlatform, service: str) -> dict[str, str]:
    """Replica name → the version in its live command line, for the replicas running now."""
    versions = {}
    for name, status in platform.replica_statuses(service).items():
        if status.state == "running" and status.pid is not None:
            assert process_alive(status.pid)
            versions[name] = process_argv(status.pid)[-1]  # from /proc: what really runs
    return versions


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if item)


async def test_deploy_runs_the_new_version(platform: LocalDeploymentPlatform) -> None:
    assert running_versions(platform, "web") == {"web.0": "v2"}
    described = platform.describe("web")
    assert described is not None and [r.version for r in described.releases] == ["v1", "v2"]


async def test_rollback_runs_the_recorded_argv_and_env_of_the_old_version(platform: LocalDeploymentPlatform) -> None:
    result = await RollbackDeployAdapter(platform).execute(
        PlanStep(action="rollback_deploy", target="web", params={"to_version": "v1"}), timeout_s=20
    )
    assert result.status == "succeeded", result
    assert result.data == {"service": "web", "previous": "v2", "current": "v1", "dry_run": False}
    assert running_versions(platform, "web") == {"web.0": "v1"}
    pid = platform.replica_statuses("web")["web.0"].pid
    assert pid is not None and environ_of(pid)["VERSION"] == "v1"
    described = platform.describe("web")
    assert described is not None and described.current_version == "v1"


async def test_scale_up_then_down_starts_and_stops_replicas(platform: LocalDeploymentPlatform) -> None:
    adapter = ScaleAdapter(platform)
    up = await adapter.execute(PlanStep(action="scale", target="web", params={"replicas": 3}), timeout_s=20)
    assert up.status == "succeeded" and up.data == {"service": "web", "previous": 1, "current": 3, "dry_run": False}
    assert running_versions(platform, "web") == {"web.0": "v2", "web.1": "v2", "web.2": "v2"}
    statuses = platform.replica_statuses("web")
    stopped_pids = [statuses[name].pid for name in ("web.1", "web.2")]
    down = await adapter.execute(PlanStep(action="scale", target="web", params={"replicas": 1}), timeout_s=20)
    assert down.status == "succeeded" and down.data["previous"] == 3
    assert running_versions(platform, "web") == {"web.0": "v2"}
    assert None not in stopped_pids and not any(process_alive(pid) for pid in stopped_pids if pid)


@pytest.mark.parametrize(
    ("step", "error"),
    [
        (PlanStep(action="rollback_deploy", target="web", params={"to_version": "v0"}), "never deployed version 'v0'"),
        (PlanStep(action="rollback_deploy", target="db", params={"to_version": "v1"}), "no deployment of service 'db'"),
        (PlanStep(action="scale", target="db", params={"replicas": 2}), "no deployment of service 'db'"),
        (PlanStep(action="scale", target="web", params={"replicas": 0}), "invalid params for scale"),
    ],
)
async def test_unknown_services_versions_and_bad_params_are_refused(
    platform: LocalDeploymentPlatform, step: PlanStep, error: str
) -> None:
    adapter = ScaleAdapter(platform) if step.action == "scale" else RollbackDeployAdapter(platform)
    result = await adapter.execute(step, timeout_s=20)
    assert result.status == "refused" and error in (result.error or ""), result
    assert running_versions(platform, "web") == {"web.0": "v2"}


async def test_deploy_refuses_an_invalid_service_name(platform: LocalDeploymentPlatform) -> None:
    with pytest.raises(DeploymentRefused):
        await platform.deploy("../web", "v3", python_argv(RUN_UNTIL_KILLED))
