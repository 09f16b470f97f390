"""Alert fingerprints are stable over label order and volatile labels, and differ where identity differs."""

from __future__ import annotations

import pytest

from bus.alert_fingerprints import FingerprintRule, fingerprint, group_key
from bus.events import AlertReceived


def _alert(**labels: str) -> AlertReceived:
    base = {"alertname": "HighErrorRate", "service": "checkout", "namespace": "prod"}
    merged = {**base, **labels}
    return AlertReceived(
        produced_by="tests", status="firing", alertname=merged["alertname"], service=merged["service"], labels=merged
    )


def test_label_order_does_not_matter() -> None:
    a = _alert(region="eu", zone="a")
    b = AlertReceived(
        produced_by="tests", status="firing", alertname="HighErrorRate", service="checkout",
        labels=dict(reversed(list(a.labels.items()))),
    )  # fmt: skip
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize("volatile", ["pod", "instance", "replica", "pod_name"])
def test_volatile_labels_do_not_change_identity(volatile: str) -> None:
    assert fingerprint(_alert(**{volatile: "x-1"})) == fingerprint(_alert(**{volatile: "x-2"}))


@pytest.mark.parametrize(
    "changed", [{"alertname": "HighLatency"}, {"service": "cart"}, {"namespace": "staging"}, {"region": "us"}]
)
def test_identifying_labels_change_identity(changed: dict[str, str]) -> None:
    assert fingerprint(_alert()) != fingerprint(_alert(**changed))


def test_status_and_annotations_are_not_identity() -> None:
    firing = _alert()
    resolved = firing.model_copy(update={"status": "resolved", "annotations": {"summary": "better"}})
    assert fingerprint(firing) == fingerprint(resolved)


def test_an_explicit_identifying_list_narrows_identity() -> None:
    rule = FingerprintRule(identifying=("service",))
    assert fingerprint(_alert(region="eu"), rule) == fingerprint(_alert(region="us"), rule)
    assert fingerprint(_alert(alertname="A"), rule) != fingerprint(_alert(alertname="B"), rule)


def test_alerts_of_one_service_and_namespace_share_a_group() -> None:
    assert group_key(_alert(alertname="A")) == group_key(_alert(alertname="B", pod="p"))
    assert group_key(_alert()) != group_key(_alert(service="cart"))
    assert group_key(_alert()) != group_key(_alert(namespace="staging"))
    assert group_key(_alert(alertname="A"), ("alertname",)) != group_key(_alert(alertname="B"), ("alertname",))


def test_fingerprint_is_short_hex() -> None:
    value = fingerprint(_alert())
    assert len(value) == 16 and int(value, 16) >= 0
