"""A deployment platform: what `scale` and `rollback_deploy` need, and a local one on top of `ProcessSupervisor`.

The local platform keeps, per service, `STATE/<service>.json`: every release deployed (version, argv, cwd, env,
in deploy order), the current version and the replica count. Replica i of a service is the managed process
`<service>.<i>`. Rolling back restarts every replica with the argv and env recorded for the older release;
scaling starts or stops replicas of the current release.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from execution.adapters.process_supervisor import ProcessStatus, ProcessSupervisor, SupervisorError
from execution.adapters.state_files import read_model, write_model

log = logging.getLogger(__name__)

_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")


class DeploymentError(Exception):
    """The platform tried and failed (a replica would not start or stop)."""


class DeploymentRefused(DeploymentError):
    """The request names something the platform does not know (service, version) or cannot accept."""


class Change(BaseModel):
    """Before and after of one platform operation (a version or a replica count)."""

    model_config = ConfigDict(frozen=True)

    service: str
    previous: str | int
    current: str | int
    # True when the platform only validated the change (Kubernetes' server-side dry run) and nothing changed.
    dry_run: bool = False


class DeploymentPlatform(Protocol):
    async def rollback(self, service: str, to_version: str) -> Change: ...

    async def scale(self, service: str, replicas: int) -> Change: ...


class Release(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] | None = None
    deployed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ServiceDeployment(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    releases: list[Release]
    current_version: str
    replicas: int = Field(ge=0)

    def release(self, version: str) -> Release | None:
        return next((release for release in self.releases if release.version == version), None)


class LocalDeploymentPlatform:
    """Services as groups of replicas managed by a `ProcessSupervisor`."""

    def __init__(self, supervisor: ProcessSupervisor, state_dir: Path) -> None:
        if state_dir.resolve() == supervisor.state_dir.resolve():
            raise ValueError("the deployment state directory must not be the supervisor's")
        self._supervisor = supervisor
        self._state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def describe(self, service: str) -> ServiceDeployment | None:
        if not _SERVICE.match(service):
            return None
        return read_model(self._state_dir / f"{service}.json", ServiceDeployment)

    async def deploy(
        self,
        service: str,
        version: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        replicas: int = 1,
    ) -> ServiceDeployment:
        """Record `version` as a new release of `service` and run `replicas` replicas of it."""
        if not _SERVICE.match(service):
            raise DeploymentRefused(f"invalid service name {service!r}")
        release = Release(
            version=version, argv=list(argv), cwd=str(cwd) if cwd else None, env=dict(env) if env is not None else None
        )
        existing = self.describe(service)
        releases = [r for r in existing.releases if r.version != version] if existing else []
        deployment = ServiceDeployment(
            service=service, releases=[*releases, release], current_version=version, replicas=replicas
        )
        await self._converge(deployment, restart=True)
        return deployment

    async def rollback(self, service: str, to_version: str) -> Change:
        deployment = self._require(service)
        if deployment.release(to_version) is None:
            known = ", ".join(r.version for r in deployment.releases)
            raise DeploymentRefused(f"{service} never deployed version {to_version!r} (known: {known})")
        await self._converge(deployment.model_copy(update={"current_version": to_version}), restart=True)
        log.info(
            "service rolled back", extra={"service": service, "from": deployment.current_version, "to": to_version}
        )
        return Change(service=service, previous=deployment.current_version, current=to_version)

    async def scale(self, service: str, replicas: int) -> Change:
        deployment = self._require(service)
        await self._converge(deployment.model_copy(update={"replicas": replicas}), restart=False)
        log.info("service scaled", extra={"service": service, "from": deployment.replicas, "to": replicas})
        return Change(service=service, previous=deployment.replicas, current=replicas)

    def _require(self, service: str) -> ServiceDeployment:
        deployment = self.describe(service)
        if deployment is None:
            raise DeploymentRefused(f"no deployment of service {service!r}")
        return deployment

    def replica_names(self, service: str) -> list[str]:
        prefix = f"{service}."
        names = [name for name in self._supervisor.names() if name.startswith(prefix)]
        return sorted((name for name in names if name[len(prefix) :].isdigit()), key=lambda n: int(n.split(".")[-1]))

    def replica_statuses(self, service: str) -> dict[str, ProcessStatus]:
        """The supervisor's status of each replica of `service` ever started, by process name."""
        statuses = {name: self._supervisor.status(name) for name in self.replica_names(service)}
        return {name: status for name, status in statuses.items() if status is not None}

    async def _converge(self, deployment: ServiceDeployment, *, restart: bool) -> None:
        """Make replicas 0..n-1 run the current release, one after the other, and stop the others.

        With `restart`, running replicas are restarted too (a rolling restart onto the current release).
        """
        write_model(self._state_dir / f"{deployment.service}.json", deployment)
        release = deployment.release(deployment.current_version)
        assert release is not None
        wanted = [f"{deployment.service}.{index}" for index in range(deployment.replicas)]
        try:
            for name in self.replica_names(deployment.service):
                if name not in wanted:
                    await self._supervisor.stop(name)
            for name in wanted:
                status = self._supervisor.status(name)
                running = status is not None and status.state == "running"
                if running and restart:
                    await self._supervisor.stop(name)
                if not running or restart:
                    cwd = Path(release.cwd) if release.cwd else None
                    await self._supervisor.start(name, release.argv, cwd=cwd, env=release.env)
        except SupervisorError as exc:
            raise DeploymentError(f"{deployment.service}: {exc}") from exc
