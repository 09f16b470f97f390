"""A `DeploymentPlatform` on Kubernetes, with the official client: a service is a Deployment of the same name.

- `scale` patches the Deployment's scale subresource.
- `rollback` does what `kubectl rollout undo --to-revision` does: it finds the Deployment's own ReplicaSet of
  the wanted version and puts that ReplicaSet's pod template back into the Deployment (a JSON patch guarded by
  the generation it read, so a concurrent change of the spec makes it fail instead of being overwritten). A version is
  the pod template's `app.kubernetes.io/version` label, or else the ReplicaSet's revision number.
- `dry_run`: every change is sent with `dryRun=All`. The API server validates and admits it (RBAC, admission,
  schema) and persists nothing; the result says `dry_run: true`.
- After a real change the platform waits, within the step's timeout, for the rollout as configured: `none`,
  `observed` (the Deployment controller saw the new spec) or `available` (every replica updated and available,
  what `kubectl rollout status` waits for).

The client is synchronous; each call runs in a worker thread under the client's own request timeout.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field
from urllib3.exceptions import HTTPError

from execution.adapters.deployment_platform import Change, DeploymentError, DeploymentRefused

log = logging.getLogger(__name__)

VERSION_LABEL = "app.kubernetes.io/version"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
# Added by the Deployment controller to each ReplicaSet's template; never part of the Deployment's own template.
_TEMPLATE_HASH_LABEL = "pod-template-hash"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_POLL_S = 0.25

T = TypeVar("T")


class KubernetesConfig(BaseModel):
    """Where the cluster is and how the platform acts on it (`OPSWARM_KUBERNETES__*` on the execution agent)."""

    model_config = ConfigDict(frozen=True)

    # A kubeconfig file; None means the in-cluster service account (the agent running as a pod).
    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str = Field(default="default", pattern=_NAME.pattern)
    dry_run: bool = False
    rollout_wait: Literal["none", "observed", "available"] = "available"
    request_timeout_s: float = Field(default=10.0, gt=0)


def api_client_for(config: KubernetesConfig) -> k8s.ApiClient:
    """An API client from the kubeconfig (and context) the config names, or from the in-cluster service account."""
    if config.kubeconfig is None:
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    return k8s_config.new_client_from_config(config_file=str(config.kubeconfig), context=config.context)


class KubernetesDeploymentPlatform:
    """Deployments in one namespace of one cluster."""

    def __init__(self, api_client: k8s.ApiClient, config: KubernetesConfig) -> None:
        self._apps = k8s.AppsV1Api(api_client)
        self._config = config
        self._dry_run = "All" if config.dry_run else None

    async def scale(self, service: str, replicas: int) -> Change:
        name = _deployment_name(service)
        scale = await self._call(self._apps.read_namespaced_deployment_scale, name, self._config.namespace)
        previous = scale.spec.replicas if scale.spec and scale.spec.replicas is not None else 0
        await self._call(
            self._apps.patch_namespaced_deployment_scale, name, self._config.namespace,
            {"spec": {"replicas": replicas}}, dry_run=self._dry_run, _content_type="application/merge-patch+json",
        )  # fmt: skip
        log.info("deployment scaled", extra={"service": service, "from": previous, "to": replicas, **self._context()})
        await self._await_rollout(name)
        return Change(service=service, previous=previous, current=replicas, dry_run=self._config.dry_run)

    async def rollback(self, service: str, to_version: str) -> Change:
        name = _deployment_name(service)
        deployment = await self._call(self._apps.read_namespaced_deployment, name, self._config.namespace)
        if deployment.spec.paused:
            raise DeploymentRefused(f"deployment {self._where(name)} is paused: resume it before rolling back")
        current = _version_of(deployment.spec.template, deployment.metadata.annotations)
        releases = await self._releases(deployment)
        target = _release(releases, to_version)
        if target is None:
            known = ", ".join(sorted({_version_of(rs.spec.template, rs.metadata.annotations) for rs in releases}))
            raise DeploymentRefused(f"{self._where(name)} has no release {to_version!r} (known: {known or 'none'})")
        template = self._apps.api_client.sanitize_for_serialization(target.spec.template)
        template.get("metadata", {}).get("labels", {}).pop(_TEMPLATE_HASH_LABEL, None)
        running = self._apps.api_client.sanitize_for_serialization(deployment.spec.template)
        if template == running:
            raise DeploymentRefused(f"{self._where(name)} already runs version {to_version!r}")
        patch = [
            # Guarded by the generation read (it moves with the spec only, not with the controller's status updates).
            {"op": "test", "path": "/metadata/generation", "value": deployment.metadata.generation},
            {"op": "replace", "path": "/spec/template", "value": template},
        ]
        await self._call(
            self._apps.patch_namespaced_deployment, name, self._config.namespace, patch,
            dry_run=self._dry_run, _content_type="application/json-patch+json",
        )  # fmt: skip
        log.info(
            "deployment rolled back", extra={"service": service, "from": current, "to": to_version, **self._context()}
        )
        await self._await_rollout(name)
        return Change(service=service, previous=current, current=to_version, dry_run=self._config.dry_run)

    async def _releases(self, deployment: k8s.V1Deployment) -> list[k8s.V1ReplicaSet]:
        """The ReplicaSets the Deployment controls (its selector's, owned by this very Deployment)."""
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        found = await self._call(
            self._apps.list_namespaced_replica_set, self._config.namespace, label_selector=selector or None
        )
        uid = deployment.metadata.uid
        return [
            rs for rs in found.items
            if any(ref.controller and ref.uid == uid for ref in rs.metadata.owner_references or [])
        ]  # fmt: skip

    async def _await_rollout(self, name: str) -> None:
        """Wait as configured for the controller to take the change up (the caller's timeout bounds this)."""
        if self._config.dry_run or self._config.rollout_wait == "none":
            return
        while True:
            deployment = await self._call(self._apps.read_namespaced_deployment_status, name, self._config.namespace)
            if _rollout_done(deployment, self._config.rollout_wait):
                return
            await asyncio.sleep(_POLL_S)

    async def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One API call in a worker thread, with the client's request timeout; API errors become platform errors."""
        kwargs["_request_timeout"] = self._config.request_timeout_s
        try:
            return await asyncio.to_thread(method, *args, **kwargs)
        except ApiException as exc:
            raise _platform_error(exc, self._config.namespace) from exc
        except HTTPError as exc:
            raise DeploymentError(f"kubernetes API unreachable: {type(exc).__name__}: {exc}") from exc

    def _where(self, name: str) -> str:
        return f"deployment {name!r} in namespace {self._config.namespace!r}"

    def _context(self) -> dict[str, object]:
        return {"namespace": self._config.namespace, "dry_run": self._config.dry_run}


def _deployment_name(service: str) -> str:
    if not _NAME.match(service):
        raise DeploymentRefused(f"{service!r} is not a Kubernetes object name (lowercase DNS-1123 label)")
    return service


def _version_of(template: k8s.V1PodTemplateSpec, annotations: dict[str, str] | None) -> str:
    labels = (template.metadata.labels if template.metadata else None) or {}
    return labels.get(VERSION_LABEL) or (annotations or {}).get(REVISION_ANNOTATION, "unknown")


def _revision(rs: k8s.V1ReplicaSet) -> int:
    value = (rs.metadata.annotations or {}).get(REVISION_ANNOTATION, "0")
    return int(value) if value.isdigit() else 0


def _release(releases: list[k8s.V1ReplicaSet], version: str) -> k8s.V1ReplicaSet | None:
    """The newest ReplicaSet whose version label, or else whose revision, is `version`."""
    for matches in (
        lambda rs: ((rs.spec.template.metadata.labels or {}) if rs.spec.template.metadata else {}).get(VERSION_LABEL),
        lambda rs: (rs.metadata.annotations or {}).get(REVISION_ANNOTATION),
    ):
        candidates = [rs for rs in releases if matches(rs) == version]
        if candidates:
            return max(candidates, key=_revision)
    return None


def _rollout_done(deployment: k8s.V1Deployment, wait: str) -> bool:
    status, spec = deployment.status, deployment.spec
    if status is None or (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return False
    if wait == "observed":
        return True
    wanted = spec.replicas if spec.replicas is not None else 1
    return (
        (status.updated_replicas or 0) >= wanted
        and (status.available_replicas or 0) >= wanted
        and (status.replicas or 0) <= wanted  # no old replicas left
    )


def _platform_error(exc: ApiException, namespace: str) -> DeploymentError:
    reason = f"kubernetes API answered {exc.status} {exc.reason}"
    if exc.status == 404:
        return DeploymentRefused(f"{reason}: no such deployment in namespace {namespace!r}")
    if exc.status in (401, 403):
        return DeploymentRefused(f"{reason}: the agent's credentials may not do this in namespace {namespace!r}")
    if exc.status in (409, 422):
        return DeploymentRefused(f"{reason}: the deployment changed meanwhile or the change is invalid")
    return DeploymentError(reason)
