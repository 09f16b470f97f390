"""Topic namespaces: the broker names of registry topics, and which namespaces a config accepts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bus.config import KafkaConfig
from bus.topics import ALERTS, ALL_TOPICS, DLQ


@pytest.mark.parametrize(
    ("namespace", "spec", "expected"),
    [
        ("", ALERTS, "opswarm.alerts.v1"),
        ("e2e-1a2b", ALERTS, "e2e-1a2b.opswarm.alerts.v1"),
        ("test_7", DLQ, "test_7.opswarm.dlq.v1"),
    ],
)
def test_a_registry_topic_is_placed_in_the_namespace(namespace: str, spec, expected: str) -> None:  # noqa: ANN001
    assert KafkaConfig(topic_namespace=namespace).topic(spec) == expected


def test_namespaces_keep_the_registry_apart() -> None:
    names = {KafkaConfig(topic_namespace=ns).topic(spec) for ns in ("", "a", "b") for spec in ALL_TOPICS}
    assert len(names) == 3 * len(ALL_TOPICS)


@pytest.mark.parametrize("namespace", ["Upper", "-lead", "has.dot", "has space", "x" * 64, "ümlaut"])
def test_a_namespace_that_is_not_a_plain_label_is_refused(namespace: str) -> None:
    with pytest.raises(ValidationError, match="topic_namespace"):
        KafkaConfig(topic_namespace=namespace)
