"""The target service's Prometheus metrics, in a registry of its own; every series has `service` and `version`.

Counters and the latency histogram move with each request of `/` (HTTP or self traffic). The state gauges —
disk used, pool in use and size, up, build info — are read when Prometheus scrapes, by a collector, so the disk
figure is the data dir as it is now (after a clear_disk, say), not as the service last saw it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from deploy.target_service.faults import ConnectionPool, FaultState, disk_usage

_LABELS = ("service", "version")
# Wide enough for the latency fault (up to seconds) and fine enough for a healthy handler.
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    """demo_disk_used_bytes, demo_disk_capacity_bytes, demo_pool_in_use, demo_pool_size, demo_up and
    demo_build_info, computed at scrape time."""

    def __init__(
        self, service: str, version: str, data_dir: Path, capacity_bytes: int, pool: ConnectionPool, faults: FaultState
    ) -> None:
        self._labels = [service, version]
        self._data_dir = data_dir
        self._capacity_bytes = capacity_bytes
        self._pool = pool
        self._faults = faults

    def collect(self) -> Iterator[Metric]:
        gauges = [
            ("demo_disk_used_bytes", "Bytes of the regular files in the data dir.", disk_usage(self._data_dir).bytes),
            ("demo_disk_capacity_bytes", "The data dir's simulated capacity.", self._capacity_bytes),
            ("demo_pool_in_use", "Connections of the pool taken (working or leaked).", self._pool.in_use),
            ("demo_pool_size", "Connections the pool holds.", self._pool.size),
            ("demo_up", "1 while the process serves.", 1),
            (
                "demo_data_corruption",
                "1 while the data store reports corrupt data.",
                int(bool(self._faults.corrupted_table)),
            ),
            ("demo_build_info", "The running release; always 1.", 1),
        ]
        for name, documentation, value in gauges:
            family = GaugeMetricFamily(name, documentation, labels=_LABELS)
            family.add_metric(self._labels, value)
            yield family


class TargetMetrics:
    """The registry one process exposes on /metrics."""

    def __init__(
        self, service: str, version: str, data_dir: Path, capacity_bytes: int, pool: ConnectionPool, faults: FaultState
    ) -> None:
        self.registry = CollectorRegistry()
        self._service, self._version = service, version
        self._requests = Counter(
            "demo_requests", "Requests of / by status code.", [*_LABELS, "code"], registry=self.registry
        )
        errors = Counter("demo_request_errors", "Requests of / answered 5xx.", _LABELS, registry=self.registry)
        self._errors = errors.labels(service, version)
        duration = Histogram(
            "demo_request_duration_seconds",
            "Time to answer /, including injected latency.",
            _LABELS,
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._duration = duration.labels(service, version)
        self.registry.register(_StateCollector(service, version, data_dir, capacity_bytes, pool, faults))
        # process_start_time_seconds tells a restart apart from a process that never went away.
        ProcessCollector(registry=self.registry)

    def observe(self, code: int, duration_s: float) -> None:
        self._requests.labels(self._service, self._version, str(code)).inc()
        if code >= 500:
            self._errors.inc()
        self._duration.observe(duration_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
