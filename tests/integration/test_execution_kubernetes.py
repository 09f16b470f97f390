"""scale and rollback_deploy on a real Kubernetes control plane (upstream etcd, kube-apiserver, controller manager)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from agents.execution.service import build_executor
from agents.execution.settings import ExecutionSettings
from bus.events import PlanStep
from execution.adapters.deployment_actions import RollbackDeployAdapter, ScaleAdapter
from execution.adapters.deployment_platform import DeploymentRefused
from execution.adapters.kubernetes_platform import (
    REVISION_ANNOTATION,
    VERSION_LABEL,
    KubernetesConfig,
    KubernetesDeploymentPlatform,
    api_client_for,
)
from tests.integration.kube_cluster import KubeCluster, kube_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, settings) -> Iterator[KubeCluster]:  # noqa: ANN001
    with kube_cluster(tmp_path_factory.mktemp("kube"), settings.tools_dir / "bin") as running:
        yield running


@pytest.fixture(scope="module")
def admin(cluster: KubeCluster) -> Iterator[k8s.ApiClient]:
    api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig()))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(admin: k8s.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    k8s.CoreV1Api(admin).delete_namespace(name)


def _platform(
    cluster: KubeCluster, namespace: str, user: str = "admin", **options: object
) -> KubernetesDeploymentPlatform:
    options.setdefault("rollout_wait", "observed")
    config = KubernetesConfig(kubeconfig=cluster.kubeconfig(user), namespace=namespace, **options)
    return KubernetesDeploymentPlatform(api_client_for(config), config)


def _template(version: str) -> k8s.V1PodTemplateSpec:
    return k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(labels={"app": "shop", VERSION_LABEL: version}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="shop", image=f"registry.invalid/shop:{version}")]),
    )


def _deploy(admin: k8s.ApiClient, namespace: str, versions: list[str], replicas: int = 1) -> None:
    """Deploy `shop` at each version in turn, waiting each time for the controller's ReplicaSet of it."""
    apps = k8s.AppsV1Api(admin)
    apps.create_namespaced_deployment(namespace, k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="shop"),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas, selector=k8s.V1LabelSelector(match_labels={"app": "shop"}),
            template=_template(versions[0]),
        ),
    ))  # fmt: skip
    _until(lambda: _revision_of(admin, namespace, versions[0]) == "1", f"revision 1 of {versions[0]}")
    for revision, version in enumerate(versions[1:], start=2):
        apps.patch_namespaced_deployment("shop", namespace, {"spec": {"template": _template(version).to_dict()}})
        _until(lambda: _revision_of(admin, namespace, version) == str(revision), f"revision {revision} of {version}")


def _revision_of(admin: k8s.ApiClient, namespace: str, version: str) -> str | None:
    """The revision of the ReplicaSet running `version` (None while there is none)."""
    for rs in k8s.AppsV1Api(admin).list_namespaced_replica_set(namespace, label_selector="app=shop").items:
        if rs.spec.template.metadata.labels.get(VERSION_LABEL) == version:
            return rs.metadata.annotations.get(REVISION_ANNOTATION)
    return None


def _stored(admin: k8s.ApiClient, namespace: str) -> tuple[str, int, str]:
    """What the API server keeps for `shop`: version label, replicas, image."""
    deployment = k8s.AppsV1Api(admin).read_namespaced_deployment("shop", namespace)
    template = deployment.spec.template
    return template.metadata.labels[VERSION_LABEL], deployment.spec.replicas, template.spec.containers[0].image


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_s}s")
        time.sleep(0.1)


async def test_scale_changes_the_replicas_and_reports_before_and_after(
    cluster: KubeCluster, admin: k8s.ApiClient, namespace: str
) -> None:
    _deploy(admin, namespace, ["1.0"], replicas=1)
    change = await _platform(cluster, namespace).scale("shop", 3)
    assert (change.previous, change.current, change.dry_run) == (1, 3, False)
    assert _stored(admin, namespace)[1] == 3
    # The controller really took it up: the ReplicaSet is asked for 3 pods.
    _until(lambda: k8s.AppsV1Api(admin).list_namespaced_replica_set(namespace).items[0].spec.replicas == 3, "rs at 3")


async def test_rollback_puts_the_old_release_back_as_kubectl_rollout_undo_does(
    cluster: KubeCluster, admin: k8s.ApiClient, namespace: str
) -> None:
    _deploy(admin, namespace, ["1.0", "1.1"])
    change = await _platform(cluster, namespace).rollback("shop", "1.0")
    assert (change.previous, change.current, change.dry_run) == ("1.1", "1.0", False)
    assert _stored(admin, namespace) == ("1.0", 1, "registry.invalid/shop:1.0")
    # The old ReplicaSet is reused and becomes the newest revision; no third ReplicaSet appears.
    _until(lambda: _revision_of(admin, namespace, "1.0") == "3", "the 1.0 ReplicaSet as revision 3")
    assert len(k8s.AppsV1Api(admin).list_namespaced_replica_set(namespace).items) == 2


async def test_a_revision_number_names_a_release_too(
    cluster: KubeCluster, admin: k8s.ApiClient, namespace: str
) -> None:
    _deploy(admin, namespace, ["1.0", "1.1", "1.2"])
    change = await _platform(cluster, namespace).rollback("shop", "2")
    assert (change.previous, change.current) == ("1.2", "2")
    assert _stored(admin, namespace)[0] == "1.1"


async def test_dry_run_is_validated_by_the_server_and_changes_nothing(
    cluster: KubeCluster, admin: k8s.ApiClient, namespace: str
) -> None:
    _deploy(admin, namespace, ["1.0", "1.1"], replicas=2)
    platform = _platform(cluster, namespace, dry_run=True, rollout_wait="available")
    scaled = await platform.scale("shop", 5)
    rolled = await platform.rollback("shop", "1.0")
    assert (scaled.previous, scaled.current, scaled.dry_run) == (2, 5, True)
    assert (rolled.previous, rolled.current, rolled.dry_run) == ("1.1", "1.0", True)
    assert _stored(admin, namespace) == ("1.1", 2, "registry.invalid/shop:1.1")
    # The server did evaluate it: a dry run of an invalid change is refused like the real one.
    with pytest.raises(DeploymentRefused, match="422"):
        await platform.scale("shop", -1)


@pytest.mark.parametrize(
    ("service", "to_version", "words"),
    [
        ("shop", "0.9", "has no release '0.9' (known: 1.0, 1.1)"),
        ("shop", "1.1", "already runs version '1.1'"),
        ("cart", "1.0", "404"),
    ],
)
async def test_a_rollback_the_cluster_cannot_do_is_refused_with_the_reason(
    cluster: KubeCluster, admin: k8s.ApiClient, namespace: str, service: str, to_version: str, words: str
) -> None:
    _deploy(admin, namespace, ["1.0", "1.1"])
    with pytest.raises(DeploymentRefused) as refused:
        await _platform(cluster, namespace).rollback(service, to_version)
    assert words in str(refused.value)
    assert _stored(admin, namespace)[0] == "1.1"


async def test_credentials_without_a_role_are_refused_by_rbac(
    cluster: KubeCluster, admin: k8s.ApiClient, namespace: str
) -> None:
    _deploy(admin, namespace, ["1.0"])
    with pytest.raises(DeploymentRefused, match="403 .*credentials may not"):
        await _platform(cluster, namespace, user="nobody").scale("shop", 2)
    assert _stored(admin, namespace)[1] == 1


async def test_the_adapters_report_a_rollout_that_never_becomes_available_as_timed_out(
    cluster: KubeCluster, admin: k8s.ApiClient, namespace: str
) -> None:
    """This cluster has no kubelet, so no pod ever becomes available: waiting for availability must time out."""
    _deploy(admin, namespace, ["1.0", "1.1"])
    platform = _platform(cluster, namespace, rollout_wait="available")
    step = PlanStep(action="scale", target="shop", params={"replicas": 2})
    scaled = await ScaleAdapter(platform).execute(step, timeout_s=2)
    step = PlanStep(action="rollback_deploy", target="shop", params={"to_version": "1.0"})
    rolled = await RollbackDeployAdapter(platform).execute(step, timeout_s=2)
    assert (scaled.status, rolled.status) == ("timed_out", "timed_out"), (scaled, rolled)
    assert _stored(admin, namespace)[:2] == ("1.0", 2)  # the changes were made; only the rollout is pending


async def test_the_execution_agent_acts_on_kubernetes_when_configured(
    cluster: KubeCluster, admin: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    _deploy(admin, namespace, ["1.0"])
    settings = ExecutionSettings(
        supervisor_dir=tmp_path / "targets", deployment_platform="kubernetes",
        kubernetes=KubernetesConfig(kubeconfig=cluster.kubeconfig(), namespace=namespace, rollout_wait="observed"),
    )  # fmt: skip
    async with httpx.AsyncClient() as http:
        executor = build_executor(settings, http)
        result = await executor.execute(PlanStep(action="scale", target="shop", params={"replicas": 4}))
    assert result.ok, result
    assert result.data == {"service": "shop", "previous": 1, "current": 4, "dry_run": False}
    assert _stored(admin, namespace)[1] == 4
