"""The pure parts of the Kubernetes platform: which ReplicaSet is a version, when a rollout is done, errors."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from execution.adapters.deployment_platform import DeploymentRefused
from execution.adapters.kubernetes_platform import (
    REVISION_ANNOTATION,
    VERSION_LABEL,
    _deployment_name,
    _platform_error,
    _release,
    _rollout_done,
)


def _rs(name: str, revision: str, version: str | None) -> k8s.V1ReplicaSet:
    labels = {"app": "shop", **({VERSION_LABEL: version} if version else {})}
    return k8s.V1ReplicaSet(
        metadata=k8s.V1ObjectMeta(name=name, annotations={REVISION_ANNOTATION: revision}),
        spec=k8s.V1ReplicaSetSpec(
            selector=k8s.V1LabelSelector(match_labels={"app": "shop"}),
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels)),
        ),
    )


RELEASES = [_rs("a", "1", "1.0"), _rs("b", "2", "1.1"), _rs("c", "3", None), _rs("d", "4", "1.0")]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.0", "d"),  # the newest ReplicaSet of that version
        ("1.1", "b"),
        ("3", "c"),  # no label: the revision number
        ("2", "b"),
        ("9.9", None),
    ],
)
def test_a_version_is_the_label_or_else_the_revision(version: str, expected: str | None) -> None:
    found = _release(RELEASES, version)
    assert (found.metadata.name if found else None) == expected


def _deployment(
    generation: int, observed: int | None, replicas: int, updated: int, available: int, total: int
) -> k8s.V1Deployment:
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="shop", generation=generation),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels={"app": "shop"}),
            template=k8s.V1PodTemplateSpec(),
        ),
        status=k8s.V1DeploymentStatus(
            observed_generation=observed, updated_replicas=updated, available_replicas=available, replicas=total
        ),
    )


@pytest.mark.parametrize(
    ("deployment", "wait", "done"),
    [
        (_deployment(3, 2, 2, 2, 2, 2), "observed", False),  # the controller has not seen the change yet
        (_deployment(3, None, 2, 2, 2, 2), "observed", False),
        (_deployment(3, 3, 2, 0, 0, 2), "observed", True),
        (_deployment(3, 3, 2, 0, 0, 2), "available", False),
        (_deployment(3, 3, 2, 2, 1, 2), "available", False),  # one replica not available yet
        (_deployment(3, 3, 2, 2, 2, 3), "available", False),  # an old replica still running
        (_deployment(3, 3, 2, 2, 2, 2), "available", True),
    ],
)
def test_a_rollout_is_done_when_the_wait_asked_for_holds(deployment: k8s.V1Deployment, wait: str, done: bool) -> None:
    assert _rollout_done(deployment, wait) is done


@pytest.mark.parametrize("service", ["Shop", "shop_api", "-shop", "shop-", "a" * 64, "shop.v1"])
def test_a_service_that_cannot_name_a_deployment_is_refused(service: str) -> None:
    with pytest.raises(DeploymentRefused, match="not a Kubernetes object name"):
        _deployment_name(service)


@pytest.mark.parametrize(
    ("status", "refused", "words"),
    [
        (404, True, "no such deployment"),
        (403, True, "credentials"),
        (401, True, "credentials"),
        (409, True, "changed meanwhile"),
        (422, True, "changed meanwhile"),
        (500, False, "500"),
        (503, False, "503"),
    ],
)
def test_api_errors_become_platform_errors(status: int, refused: bool, words: str) -> None:
    error = _platform_error(ApiException(status=status, reason="Reason"), "prod")
    assert isinstance(error, DeploymentRefused) is refused
    assert words in str(error)
