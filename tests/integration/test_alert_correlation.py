"""Monitoring's alert memory on the real Redis: every alert gets one outcome, incidents open, merge and resolve."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from redis.asyncio import Redis

from bus.alert_fingerprints import group_key
from bus.events import AlertReceived
from scheduler.alert_correlation import AlertCorrelator, CorrelationRules
from scheduler.clock import ManualClock
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration


def _alert(alertname: str = "HighErrorRate", status: str = "firing", service: str = "checkout", **extra: str) -> AlertReceived:
    severity = extra.pop("severity", "warning")
    labels = {"alertname": alertname, "service": service, "namespace": "prod", **extra}
    return AlertReceived(
        produced_by="tests", status=status, alertname=alertname, service=service, severity=severity, labels=labels
    )


@pytest.fixture
def correlator(redis_client: Redis, key_prefix: str, clock: ManualClock) -> AlertCorrelator:
    ids = (f"inc-{n}" for n in itertools.count(1))
    return AlertCorrelator(redis_client, CorrelationRules(), key_prefix, clock=clock, incident_ids=lambda: next(ids))


async def test_alerts_of_one_service_correlate_into_one_incident(correlator: AlertCorrelator) -> None:
    first = await correlator.observe(_alert("HighErrorRate"))
    second = await correlator.observe(_alert("HighLatency", pod="p-1"))
    other = await correlator.observe(_alert("HighErrorRate", service="cart"))
    assert (first.kind, first.effect, first.incident_id) == ("opened", "opened", "inc-1")
    assert (second.kind, second.effect, second.incident_id, second.firing) == ("merged", "alert_added", "inc-1", 2)
    assert other.kind == "opened" and other.incident_id not in (None, "inc-1")


async def test_repeats_are_duplicates_inside_and_after_the_dedup_window(
    correlator: AlertCorrelator, clock: ManualClock
) -> None:
    await correlator.observe(_alert())
    again = await correlator.observe(_alert(pod="restarted-pod"))
    clock.advance(120)
    later = await correlator.observe(_alert())
    assert (again.kind, again.reason) == ("duplicate", "same status within the dedup window")
    assert (later.kind, later.reason, later.incident_id) == ("duplicate", "already firing in its incident", "inc-1")


async def test_resolves_are_followed_and_a_fresh_firing_opens_a_new_incident(
    correlator: AlertCorrelator, clock: ManualClock
) -> None:
    await correlator.observe(_alert("A"))
    await correlator.observe(_alert("B"))
    one = await correlator.observe(_alert("A", status="resolved"))
    repeat = await correlator.observe(_alert("A", status="resolved"))
    clock.advance(61)
    both = await correlator.observe(_alert("B", status="resolved"))
    fresh = await correlator.observe(_alert("A"))
    assert (one.kind, one.effect, one.firing, one.total) == ("merged", "alert_resolved", 1, 2)
    assert repeat.kind == "duplicate"
    assert (both.kind, both.effect, both.incident_id) == ("merged", "resolved", "inc-1")
    assert fresh.kind == "opened" and fresh.incident_id not in (None, "inc-1")


async def test_a_resolve_nobody_knows_is_suppressed(correlator: AlertCorrelator) -> None:
    outcome = await correlator.observe(_alert(status="resolved"))
    assert (outcome.kind, outcome.incident_id) == ("suppressed", None)
    assert "no open incident" in outcome.reason


async def test_a_flapping_alert_is_suppressed(correlator: AlertCorrelator, clock: ManualClock) -> None:
    outcomes = []
    for status in ["firing", "resolved", "firing", "resolved", "firing", "resolved"]:
        outcomes.append(await correlator.observe(_alert("Flappy", status=status)))
        clock.advance(61)
    assert [o.kind for o in outcomes[:4]] == ["opened", "merged", "opened", "merged"]
    assert [(o.kind, o.reason) for o in outcomes[4:]] == [("suppressed", "flapping")] * 2
    clock.advance(601)
    calm = await correlator.observe(_alert("Flappy", status="firing"))
    assert calm.kind != "suppressed"


async def test_a_more_severe_alert_escalates_the_incident(correlator: AlertCorrelator) -> None:
    await correlator.observe(_alert("A", severity="warning"))
    worse = await correlator.observe(_alert("B", severity="critical"))
    assert (worse.kind, worse.effect) == ("merged", "escalated")


async def test_a_quiet_group_stops_taking_alerts_after_the_correlation_window(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    ids = (f"inc-{n}" for n in itertools.count(1))
    correlator = AlertCorrelator(
        redis_client, CorrelationRules(correlation_window_s=0.3), key_prefix, clock=clock, incident_ids=lambda: next(ids)
    )
    first = await correlator.observe(_alert("A"))
    group = f"{key_prefix}:alerts:group:{group_key(_alert())}"
    await eventually(lambda: _gone(redis_client, group))
    late = await correlator.observe(_alert("B"))
    assert late.kind == "opened" and late.incident_id not in (None, first.incident_id)


async def test_concurrent_alerts_of_one_group_open_exactly_one_incident(correlator: AlertCorrelator) -> None:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(correlator.observe(_alert(f"Alert{i}"))) for i in range(20)]
    kinds = sorted(t.result().kind for t in tasks)
    assert kinds == ["merged"] * 19 + ["opened"]
    assert len({t.result().incident_id for t in tasks}) == 1


async def _gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_a_redelivered_alert_gets_the_same_outcome_again(correlator: AlertCorrelator) -> None:
    alert = _alert()
    first = await correlator.observe(alert)
    redelivered = await correlator.observe(alert)
    repeat = await correlator.observe(_alert())
    orphan = _alert(status="resolved", service="cart")
    assert redelivered == first and first.kind == "opened"
    assert repeat.kind == "duplicate"
    assert await correlator.observe(orphan) == await correlator.observe(orphan)
