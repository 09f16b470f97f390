"""Settings of the execution process (environment prefix `OPSWARM_`, nesting with `__`).

Lists and nested models come as JSON, e.g. `OPSWARM_CLEAR_DISK_ROOTS='["/var/tmp/app"]'`,
`OPSWARM_SCRIPTS='{"scripts": [{"name": "purge-cache", "path": "/opt/ops/purge-cache", "safe": true}]}'`,
`OPSWARM_ADMIN_ENDPOINTS='{"admin_urls": {"checkout": "http://127.0.0.1:8081/admin/pool"}}'`,
`OPSWARM_DEPLOYMENT_PLATFORM=kubernetes OPSWARM_KUBERNETES__KUBECONFIG=~/.kube/config OPSWARM_KUBERNETES__DRY_RUN=true`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from execution.adapters.http_call import AdminEndpointsConfig
from execution.adapters.kubernetes_platform import KubernetesConfig
from execution.adapters.scripts import ScriptAllowlist
from scheduler.agent_settings import AgentSettings
from scheduler.idempotency import DEFAULT_TTL_S


class ExecutionSettings(AgentSettings):
    instance_id: str = "execution-0"
    consumer_group: str = "opswarm-execution"
    http_port: int | None = Field(default=9184, ge=0, le=65535)
    # Where verification reads metrics; None (or empty) = no source, every verification fails "not configured".
    prometheus_url: str | None = None
    prometheus_timeout_s: float = Field(default=5.0, gt=0)
    # The local process supervisor's state directory (restart_process, and the replicas of local deployments).
    supervisor_dir: Path = Path(".opswarm/targets")
    # Where scale and rollback_deploy act: local deployments (replicas under the process supervisor), or the
    # Deployments of a Kubernetes namespace (OPSWARM_KUBERNETES__KUBECONFIG, __NAMESPACE, __DRY_RUN, ...).
    deployment_platform: Literal["local", "kubernetes"] = "local"
    # The local deployment platform's state directory.
    deployments_dir: Path = Path(".opswarm/deployments")
    kubernetes: KubernetesConfig = KubernetesConfig()
    # Directories clear_disk may delete old files in (relative ones are taken from the working directory).
    clear_disk_roots: list[str] = Field(default_factory=lambda: [".opswarm/scenarios"])
    # run_allowlisted_script: the scripts that may run (those marked `safe` run at the SAFE tier).
    scripts: ScriptAllowlist = ScriptAllowlist()
    # flush_connection_pool: each service's admin URL.
    admin_endpoints: AdminEndpointsConfig = AdminEndpointsConfig()
    # How long an action's idempotency record (and its outcome) is kept.
    idempotency_ttl_s: float = Field(default=DEFAULT_TTL_S, gt=0)
    verify_poll_every_s: float = Field(default=0.5, gt=0)
    # How long one verification (query and rollback steps) may take before its timer fires again elsewhere.
    verify_lease_s: float = Field(default=600.0, gt=0)
    verify_batch: int = Field(default=10, ge=1, le=1000)

    @field_validator("prometheus_url")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip()
