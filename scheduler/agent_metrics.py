"""The Prometheus series of the agents running in this process, read from their consumers at scrape time.

One collector in prometheus-client's default REGISTRY serves every agent of the process (tests run several);
each `run_agent` adds its `AgentVitals` while it runs. Counters come straight from the consumers' stats; the
consumer lag is the value of the last `refresh_lag()` (the heartbeat and every /metrics request refresh it),
because a collector cannot await. Agents register their own metrics in the same default registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.consumer import EventConsumer

_CONSUMER_LABELS = ["agent", "instance", "consumer"]
_AGENT_LABELS = ["agent", "instance"]


@dataclass
class AgentVitals:
    """What one running agent reports: its consumers, their last measured lag, its last successful beat."""

    agent: str
    instance_id: str
    consumers: Sequence[EventConsumer]
    started_at: float = field(default_factory=time.monotonic)
    last_beat_at: float | None = None
    lags: dict[str, int] = field(default_factory=dict)

    async def refresh_lag(self) -> int:
        """Measure every consumer's lag now; the total."""
        for consumer in self.consumers:
            self.lags[consumer.name] = await consumer.lag()
        return sum(self.lags.values())

    def beat_succeeded(self) -> None:
        self.last_beat_at = time.monotonic()

    def seconds_since_beat(self) -> float:
        """Since the last successful heartbeat; since the agent started while none succeeded yet."""
        return time.monotonic() - (self.last_beat_at if self.last_beat_at is not None else self.started_at)


class AgentCollector(Collector):
    """Yields the opswarm_agent_* / opswarm_consumer_* families of every tracked agent."""

    def __init__(self) -> None:
        self._tracked: dict[int, AgentVitals] = {}

    def track(self, vitals: AgentVitals) -> None:
        self._tracked[id(vitals)] = vitals

    def untrack(self, vitals: AgentVitals) -> None:
        self._tracked.pop(id(vitals), None)

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        handled, dead_lettered, retries, lag, beat_age = families
        for vitals in list(self._tracked.values()):
            for consumer in vitals.consumers:
                labels = [vitals.agent, vitals.instance_id, consumer.name]
                handled.add_metric(labels, consumer.stats.handled)
                dead_lettered.add_metric(labels, consumer.stats.dead_lettered)
                retries.add_metric(labels, consumer.stats.retries)
                if consumer.name in vitals.lags:
                    lag.add_metric(labels, vitals.lags[consumer.name])
            beat_age.add_metric([vitals.agent, vitals.instance_id], vitals.seconds_since_beat())
        yield from families

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily, CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        consumer, agent = _CONSUMER_LABELS, _AGENT_LABELS
        return (
            CounterMetricFamily("opswarm_consumer_events_handled", "Events handled.", labels=consumer),
            CounterMetricFamily("opswarm_consumer_events_dead_lettered", "Events dead-lettered.", labels=consumer),
            CounterMetricFamily("opswarm_consumer_handler_retries", "Retries of retriable errors.", labels=consumer),
            GaugeMetricFamily("opswarm_consumer_lag", "Events not consumed yet (last measured).", labels=consumer),
            GaugeMetricFamily("opswarm_agent_heartbeat_age_seconds", "Since the last good heartbeat.", labels=agent),
        )


AGENTS = AgentCollector()
REGISTRY.register(AGENTS)


@contextmanager
def tracked(vitals: AgentVitals) -> Iterator[AgentVitals]:
    """Expose `vitals` on /metrics for the duration of the block."""
    AGENTS.track(vitals)
    try:
        yield vitals
    finally:
        AGENTS.untrack(vitals)
