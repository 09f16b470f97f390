"""A scenario's target: a real demo service deployed on the local deployment platform the execution agent uses.

The target runs as replica `<service>.0` under the same process supervisor state directory as the execution
agent, so the swarm's restart and rollback act on it for real. Prometheus scrapes it through a file_sd entry.
"""

from __future__ import annotations

import logging
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.prometheus_targets import (
    register_target,
    unregister_target,
    wait_for_series,
    wait_target_dropped,
)
from deploy.settings import CHECKOUT_DIR, Settings
from execution.adapters.deployment_platform import LocalDeploymentPlatform
from execution.adapters.process_supervisor import ProcessSupervisor

log = logging.getLogger(__name__)
_HTTP_TIMEOUT_S = 5.0
# Prometheus's file discovery notices a removed target file within about a second.
_DROP_TIMEOUT_S = 15.0


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class ScenarioTarget:
    settings: Settings
    service: str
    port: int
    self_traffic_rps: float = 20.0
    # True: whoever runs the target fires its alerts (the scenarios); the stack's alert rules leave it out.
    # False: the stack's Prometheus rules fire them through Alertmanager and the bridge (the demo).
    fires_own_alerts: bool = True
    # The data dir's simulated capacity: 8 MiB, so that the disk_fill fault crosses the DiskFull rule's 90 %.
    disk_capacity_bytes: int = 8 << 20

    @property
    def process(self) -> str:
        return f"{self.service}.0"

    @property
    def url(self) -> str:
        return f"http://{self.settings.stack.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.settings.scenarios_dir() / self.service

    def _platform(self) -> LocalDeploymentPlatform:
        supervisor = ProcessSupervisor(self.settings.targets_dir())
        return LocalDeploymentPlatform(supervisor, self.settings.deployments_dir())

    async def deploy(self, version: str) -> None:
        """Run `version` of the service (a new release; the previous one stays known for rollbacks)."""
        env = {
            "OPSWARM_TARGET_NAME": self.service, "OPSWARM_TARGET_HOST": self.settings.stack.host,
            "OPSWARM_TARGET_PORT": str(self.port), "OPSWARM_TARGET_VERSION": version,
            "OPSWARM_TARGET_DATA_DIR": str(self.data_dir),
            "OPSWARM_TARGET_SELF_TRAFFIC_RPS": str(self.self_traffic_rps), "OPSWARM_TARGET_LOG_LEVEL": "WARNING",
            "OPSWARM_TARGET_DISK_CAPACITY_BYTES": str(self.disk_capacity_bytes),
        }  # fmt: skip
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self._platform().deploy(
            self.service, version, [sys.executable, "-m", "deploy.target_service"], cwd=CHECKOUT_DIR, env=env
        )

    async def scrape(self, timeout_s: float) -> None:
        """Have Prometheus scrape the target, and wait until it has."""
        labels = {"service": self.service, "env": "staging", **({"alerts": "self"} if self.fires_own_alerts else {})}
        register_target(self.settings.state_dir, self.service, f"{self.settings.stack.host}:{self.port}", labels)
        await wait_for_series(self.settings.prometheus_url(), f'demo_up{{service="{self.service}"}}', timeout_s)

    async def fault(self, kind: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT_S) as client:
            response = await client.post(f"{self.url}/faults/{kind}", json=params or {})
            response.raise_for_status()
            return response.json()

    async def remove(self) -> None:
        """Forget the service (Prometheus target, deployment record) and stop every replica: the target goes first,
        so that the stop fires no ServiceDown (a new incident for a service that is gone on purpose)."""
        if unregister_target(self.settings.state_dir, self.service):
            await wait_target_dropped(self.settings.prometheus_url(), self.service, _DROP_TIMEOUT_S)
        platform = self._platform()
        supervisor = ProcessSupervisor(self.settings.targets_dir())
        for name in platform.replica_names(self.service):
            if supervisor.status(name) is not None:
                await supervisor.stop(name)
        (self.settings.deployments_dir() / f"{self.service}.json").unlink(missing_ok=True)
