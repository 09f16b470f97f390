"""Monitoring's own series on /metrics, so that backpressure in a storm is visible stage by stage.

- `opswarm_monitoring_alert_age_seconds`: bridge receipt (the alert's occurred_at) → monitoring handles it: the
  bridge, Kafka and the consumer lag together (the lag itself is `opswarm_consumer_lag`).
- `opswarm_monitoring_correlate_seconds`: one batch's decisions in Redis (one pipelined round trip).
- `opswarm_monitoring_batch_alerts`: alerts per batch (large batches: monitoring is behind and catching up).
- `opswarm_monitoring_alerts_total{outcome}`: opened, merged, duplicate, suppressed.
- `opswarm_monitoring_storms_started_total`: service groups that went into storm mode.

The series are registered once per process in prometheus-client's default registry, labelled by instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from scheduler.incident_events import TriagedAlert

_AGE = Histogram(
    "opswarm_monitoring_alert_age_seconds", "From the bridge's receipt of an alert to monitoring handling it.",
    ["instance"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)  # fmt: skip
_CORRELATE = Histogram(
    "opswarm_monitoring_correlate_seconds", "Deciding one batch of alerts in Redis.", ["instance"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)  # fmt: skip
_BATCH = Histogram(
    "opswarm_monitoring_batch_alerts", "Alerts per batch handled.", ["instance"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)  # fmt: skip
_OUTCOMES = Counter("opswarm_monitoring_alerts", "Alerts by outcome.", ["instance", "outcome"])
_STORMS = Counter("opswarm_monitoring_storms_started", "Service groups that went into storm mode.", ["instance"])


@dataclass
class MonitoringMetrics:
    instance_id: str

    def __post_init__(self) -> None:
        self.alert_age = _AGE.labels(self.instance_id)
        self.correlate_seconds = _CORRELATE.labels(self.instance_id)
        self.batch_alerts = _BATCH.labels(self.instance_id)
        self._outcomes = {kind: _OUTCOMES.labels(self.instance_id, kind)
                          for kind in ("opened", "merged", "duplicate", "suppressed")}  # fmt: skip
        self._storms = _STORMS.labels(self.instance_id)

    def count(self, triaged: Sequence[TriagedAlert]) -> None:
        for item in triaged:
            self._outcomes[item.outcome.kind].inc()
            if item.outcome.storm_started:
                self._storms.inc()
