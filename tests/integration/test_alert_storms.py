"""Storm mode and batched decisions on the real Redis: a cascade becomes one incident, batches decide as singles do,
and a record decided twice (a redelivery) gets its first decision again while the same alert sent again does not."""

from __future__ import annotations

import itertools

import pytest
from redis.asyncio import Redis

from bus.events import AlertReceived
from scheduler.alert_correlation import AlertCorrelator, CorrelationOutcome, CorrelationRules
from scheduler.clock import ManualClock

pytestmark = pytest.mark.integration


def _alert(service: str, alertname: str = "HighErrorRate", status: str = "firing", **labels: str) -> AlertReceived:
    namespace = labels.pop("namespace", "shop")
    return AlertReceived(
        produced_by="tests", status=status, alertname=alertname, service=service, severity="critical",
        labels={"alertname": alertname, "service": service, "namespace": namespace, **labels},
    )  # fmt: skip


def _cascade(root: str = "db", dependants: int = 30, root_alerts: int = 20) -> list[AlertReceived]:
    """A root failure firing a burst of distinct alerts, then its dependants, three alerts each."""
    burst = [_alert(root, "DatabaseErrors", route=f"/q{i}") for i in range(root_alerts)]
    fan_out = [
        _alert(f"svc-{d}", name)
        for d in range(dependants)
        for name in ("HighErrorRate", "HighLatency", "UpstreamErrors")
    ]
    return burst + fan_out


def _correlator(redis: Redis, prefix: str, clock: ManualClock, **rules: object) -> AlertCorrelator:
    ids = (f"inc-{n}" for n in itertools.count(1))
    return AlertCorrelator(redis, CorrelationRules(**rules), prefix, clock=clock, incident_ids=lambda: next(ids))  # type: ignore[arg-type]


async def _decide_in_batches(
    correlator: AlertCorrelator, alerts: list[AlertReceived], size: int
) -> list[CorrelationOutcome]:
    outcomes: list[CorrelationOutcome] = []
    for start in range(0, len(alerts), size):
        chunk = alerts[start : start + size]
        outcomes += await correlator.observe_many([(a, ("alerts", 0, start + i)) for i, a in enumerate(chunk)])
    return outcomes


@pytest.mark.parametrize("batch_size", [1, 7, 500])
async def test_a_cascade_in_storm_mode_is_one_incident(
    redis_client: Redis, key_prefix: str, clock: ManualClock, batch_size: int
) -> None:
    correlator = _correlator(redis_client, key_prefix, clock)
    outcomes = await _decide_in_batches(correlator, _cascade(), batch_size)
    opened = [o for o in outcomes if o.kind == "opened"]
    assert len(opened) == 1 and {o.incident_id for o in outcomes} == {opened[0].incident_id}
    assert [o.kind for o in outcomes].count("merged") == len(outcomes) - 1
    started = [o for o in outcomes if o.storm_started]
    assert len(started) == 1
    last = outcomes[-1]
    assert (last.storm_group, last.services, last.total, last.firing) == ("namespace=shop", 31, 110, 110)


async def test_without_storm_mode_the_same_cascade_is_an_incident_per_service(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    correlator = _correlator(redis_client, key_prefix, clock, storm_alert_threshold=0, storm_open_limit=0)
    outcomes = await _decide_in_batches(correlator, _cascade(), 50)
    assert len({o.incident_id for o in outcomes if o.kind == "opened"}) == 31
    assert not any(o.storm_group or o.storm_started for o in outcomes)


async def test_a_group_opening_too_many_incidents_storms_into_its_first(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    correlator = _correlator(redis_client, key_prefix, clock, storm_alert_threshold=0, storm_open_limit=3)
    outcomes = [await correlator.observe(_alert(f"svc-{n}")) for n in range(10)]
    assert [o.kind for o in outcomes] == ["opened"] * 3 + ["merged"] * 7
    assert {o.incident_id for o in outcomes[3:]} == {outcomes[0].incident_id}
    assert outcomes[-1].storm_group == "namespace=shop" and outcomes[-1].services == 8


async def test_alerts_without_a_service_group_never_storm(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    correlator = _correlator(redis_client, key_prefix, clock, storm_alert_threshold=2, storm_open_limit=1)
    outcomes = [await correlator.observe(_alert(f"svc-{n}", namespace="")) for n in range(5)]
    assert [o.kind for o in outcomes] == ["opened"] * 5


async def test_the_storm_ends_after_a_quiet_window_and_with_its_incident(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    correlator = _correlator(redis_client, key_prefix, clock, storm_alert_threshold=0, storm_open_limit=1)
    first = await correlator.observe(_alert("db"))
    joined = await correlator.observe(_alert("api"))
    assert joined.incident_id == first.incident_id and joined.storm_group == "namespace=shop"
    for service in ("db", "api"):
        resolved = await correlator.observe(_alert(service, status="resolved"))
    assert resolved.effect == "resolved"
    clock.advance(61)
    fresh = await correlator.observe(_alert("web"))
    assert fresh.kind == "opened" and fresh.incident_id != first.incident_id


async def test_batches_decide_exactly_as_single_alerts_do(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    alerts = [
        *_cascade(dependants=10),
        _alert("svc-1", "HighLatency", status="resolved"),
        _alert("db", "DatabaseErrors", route="/q0"),
    ]
    one_by_one = _correlator(redis_client, f"{key_prefix}-single", clock)
    batched = _correlator(redis_client, f"{key_prefix}-batch", clock)
    singles = [await one_by_one.observe(a, ("alerts", 0, i)) for i, a in enumerate(alerts)]
    assert await _decide_in_batches(batched, alerts, 16) == singles


async def test_a_redelivered_batch_gets_its_decisions_again_but_a_resent_alert_is_a_duplicate(
    redis_client: Redis, key_prefix: str, clock: ManualClock
) -> None:
    correlator = _correlator(redis_client, key_prefix, clock)
    alerts = [_alert("checkout", f"Alert{i}") for i in range(6)]
    first = await correlator.observe_many([(a, ("alerts", 2, 100 + i)) for i, a in enumerate(alerts)])
    # the transaction aborted: the same records again, cut differently
    again = await correlator.observe_many([(a, ("alerts", 2, 100 + i)) for i, a in enumerate(alerts[:4])])
    again += await correlator.observe_many([(a, ("alerts", 2, 104 + i)) for i, a in enumerate(alerts[4:])])
    assert again == first and first[0].kind == "opened"
    # the sender sent the first alert again: a new record with the same event id
    resent = await correlator.observe(alerts[0], ("alerts", 2, 106))
    assert (resent.kind, resent.reason) == ("duplicate", "same status within the dedup window")
