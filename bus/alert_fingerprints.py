"""Alert identity: a stable fingerprint over an alert's identifying labels, and the group it correlates into.

Two alerts with the same fingerprint are the same alert (a repeat, or its resolve); alerts with the same group
key within a window belong to one incident. Volatile labels (pod, instance, ...) are left out of the
fingerprint by default, so a restarted pod does not look like a new problem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from bus.events import AlertReceived

DEFAULT_IGNORED_LABELS = frozenset({"pod", "pod_name", "instance", "replica", "container_id", "endpoint", "uid"})
DEFAULT_GROUP_BY = ("namespace", "service")


@dataclass(frozen=True)
class FingerprintRule:
    """Which labels identify an alert: `identifying` if given, else every label but the ignored ones."""

    identifying: tuple[str, ...] | None = None
    ignored: frozenset[str] = field(default=DEFAULT_IGNORED_LABELS)

    def identity(self, alert: AlertReceived) -> dict[str, str]:
        labels = {**alert.labels, "alertname": alert.alertname, "service": alert.service}
        if self.identifying is not None:
            return {k: labels[k] for k in self.identifying if k in labels} | {"alertname": alert.alertname}
        return {k: v for k, v in labels.items() if k not in self.ignored}


def fingerprint(alert: AlertReceived, rule: FingerprintRule = FingerprintRule()) -> str:
    """A stable 16-hex-digit hash of the alert's identifying labels (order and volatile labels don't matter)."""
    return _digest(rule.identity(alert))


def group_key(alert: AlertReceived, group_by: tuple[str, ...] = DEFAULT_GROUP_BY) -> str:
    """The correlation group: the values of `group_by` (service falls back to the alert's service)."""
    labels = {**alert.labels, "service": alert.service}
    return _digest({name: labels.get(name, "") for name in group_by})


def _digest(labels: Mapping[str, str]) -> str:
    canonical = "\x1f".join(f"{k}\x1e{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
