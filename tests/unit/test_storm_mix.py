"""The storm's alert mix (deterministic, valid Alertmanager bodies the bridge accepts, the kinds of sends it
claims, cheap enough for 20,000 alerts/s) and its pacing and configuration."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import orjson
import pytest
from pydantic import ValidationError

from bus.bridge.alert_events import Receipt, alertmanager_events
from bus.bridge.alert_payloads import AlertmanagerWebhook
from deploy.storm.alert_mix import SEND_KINDS, AlertBatch, AlertMix, MixConfig, MixProportions
from deploy.storm.storm_run import StormConfig, TokenBucket

START_US = 1_790_000_000_000_000  # a fixed start: the mix (and every event id) depends on it


def batches(config: MixConfig, alerts: int, limit: int = 50) -> list[AlertBatch]:
    mix = AlertMix(config, started_at_us=START_US)
    out, sent = [], 0
    while sent < alerts:
        batch = mix.next_batch(min(limit, alerts - sent))
        out.append(batch)
        sent += batch.size
    return out


def sends(config: MixConfig, alerts: int, limit: int = 50) -> list[tuple[str, dict]]:
    """(kind, alert as the bridge parsed it) for every alert, in order."""
    out = []
    for batch in batches(config, alerts, limit):
        body = orjson.loads(batch.body)
        out.extend(zip(batch.kinds, body["alerts"], strict=True))
    return out


def test_the_same_config_and_start_give_the_same_bodies() -> None:
    config = MixConfig(services=30, groups=5, seed=7, run_id="abc123")
    first = [b.body for b in batches(config, 3000)]
    assert first == [b.body for b in batches(config, 3000)]
    assert first != [b.body for b in batches(MixConfig(services=30, groups=5, seed=8, run_id="abc123"), 3000)]


@pytest.mark.parametrize("services,groups,limit", [(1, 1, 1), (12, 3, 7), (200, 20, 100), (50, 50, 500)])
def test_every_body_is_a_webhook_of_one_group_the_bridge_accepts(services: int, groups: int, limit: int) -> None:
    config = MixConfig(services=services, groups=groups, run_id="r1")
    mix = AlertMix(config, started_at_us=START_US)
    assert len(set(mix.namespaces)) == groups
    assert all(namespace.startswith("storm-r1-") for namespace in mix.namespaces)
    for _ in range(40):
        batch = mix.next_batch(limit)
        assert batch.size == limit
        body = orjson.loads(batch.body)
        webhook = AlertmanagerWebhook.model_validate(body)
        events = alertmanager_events(body, Receipt.now())
        assert len(events) == len(webhook.alerts) == limit
        assert {event.labels["namespace"] for event in events} == {batch.group}
        assert body["groupLabels"] == {"namespace": batch.group}
        assert all(body["commonLabels"].items() <= event.labels.items() for event in events)
        assert body["status"] == ("firing" if any(e.status == "firing" for e in events) else "resolved")
        for event in events:
            assert {"alertname", "service", "namespace", "severity", "instance", "pod", "env"} <= event.labels.keys()
            assert event.service == event.labels["service"] and event.source_fingerprint


def test_sent_by_kind_counts_every_alert_and_follows_the_proportions() -> None:
    config = MixConfig(services=200, groups=20, run_id="r2")
    mix = AlertMix(config, started_at_us=START_US)
    kinds: Counter[str] = Counter()
    for _ in range(1000):
        kinds.update(mix.next_batch(100).kinds)
    assert dict(kinds) == {k: v for k, v in mix.sent_by_kind.items() if v}
    assert sum(kinds.values()) == 100_000
    share = {kind: kinds[kind] / 100_000 for kind in SEND_KINDS}
    # Groups whose alerts all fire turn `new` into resolves: shares drift, but every kind is well represented.
    assert all(share[kind] > 0.05 for kind in ("new", "repeat", "flap", "resolve", "cascade"))
    assert 0.005 < share["stray_resolve"] < 0.05


@pytest.mark.parametrize(
    "only,allowed",
    [
        ("new", {"new", "resolve"}),  # once every alert of a group fires, a `new` frees one up
        ("repeat", {"repeat", "new"}),  # nothing to repeat at first
        ("resolve", {"resolve", "new"}),
        ("stray_resolve", {"stray_resolve", "new"}),
        ("flap", {"flap", "new"}),
        ("cascade", {"cascade"}),
    ],
)
def test_a_mix_of_one_kind_sends_that_kind(only: str, allowed: set[str]) -> None:
    shares = {kind: 0.0 for kind in SEND_KINDS} | {only: 1.0}
    config = MixConfig(services=40, groups=4, run_id="r3", proportions=MixProportions(**shares))
    kinds = Counter(kind for kind, _ in sends(config, 4000))
    assert set(kinds) <= allowed
    assert kinds[only] >= 2000  # at least every other send (resolve-only: new, resolve, new, ...)


def event_ids(config: MixConfig, alerts: int) -> list[tuple[str, str, dict]]:
    out = []
    for batch in batches(config, alerts):
        for kind, event in zip(batch.kinds, alertmanager_events(orjson.loads(batch.body), Receipt.now()), strict=True):
            out.append((kind, event.event_id, event))
    return out


def test_repeats_carry_the_event_id_of_an_earlier_firing_send_and_other_sends_are_new() -> None:
    seen: set[str] = set()
    repeats = 0
    for kind, event_id, event in event_ids(MixConfig(services=60, groups=6, run_id="r4"), 20_000):
        if kind == "repeat":
            assert event_id in seen and event.status == "firing"
            repeats += 1
        elif kind in ("new", "flap", "resolve", "stray_resolve"):
            assert event_id not in seen, f"a {kind} send reused an event id"
        seen.add(event_id)
    assert repeats > 1000


def test_a_flapping_alert_alternates_and_gets_a_new_start_each_time_it_fires_again() -> None:
    shares = {kind: 0.0 for kind in SEND_KINDS} | {"flap": 1.0}
    config = MixConfig(services=10, groups=2, run_id="r5", flap_changes=6, proportions=MixProportions(**shares),
                       nominal_rate=1000)  # fmt: skip
    history: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for kind, _, event in event_ids(config, 20_000):
        if kind == "flap":
            history[event.source_fingerprint or ""].append((event.status, event.starts_at))
    complete = 0
    for changes in history.values():
        statuses = [status for status, _ in changes]
        assert all(a != b for a, b in zip(statuses, statuses[1:])), "a flap alternates firing and resolved"
        assert statuses[0] == "firing"
        for start in range(0, len(changes) - 5, 6):  # each full flap: F R F R F R
            cycle = changes[start : start + 6]
            firing_starts = [starts for status, starts in cycle if status == "firing"]
            assert len(set(firing_starts)) == 3
            assert [starts for status, starts in cycle if status == "resolved"] == firing_starts
            complete += 1
    assert complete > 100


def test_a_cascade_starts_with_a_burst_of_its_root_then_dependants_of_its_group_fire() -> None:
    shares = {kind: 0.0 for kind in SEND_KINDS} | {"cascade": 1.0}
    config = MixConfig(services=40, groups=4, run_id="r6", cascade_root_alerts=3, cascade_fanout=4,
                       proportions=MixProportions(**shares), nominal_rate=1000)  # fmt: skip
    mix = AlertMix(config, started_at_us=START_US)
    first = orjson.loads(mix.next_batch(3).body)
    root = {(a["labels"]["service"], a["labels"]["alertname"]) for a in first["alerts"]}
    assert len({service for service, _ in root}) == 1, "the burst comes from one root service"
    assert len(root) == 3, "three distinct alerts of the root"
    later = [orjson.loads(mix.next_batch(50).body) for _ in range(40)]
    dependants = {
        a["labels"]["service"] for body in later for a in body["alerts"] if body["groupLabels"] == first["groupLabels"]
    }
    assert dependants - {service for service, _ in root}, "other services of the root's group fire after it"


def test_the_mix_is_cheap_enough_for_twenty_thousand_alerts_a_second() -> None:
    mix = AlertMix(MixConfig(run_id="fast01"), started_at_us=START_US)
    started = time.perf_counter()
    alerts = 0
    while alerts < 100_000:
        alerts += mix.next_batch(100).size
    rate = alerts / (time.perf_counter() - started)
    assert rate > 40_000, f"the mix makes only {rate:,.0f} alerts/s"


@pytest.mark.parametrize(
    "kwargs",
    [{"services": 3, "groups": 4}, {"groups": 0}, {"nominal_rate": 0}, {"flap_changes": 1}, {"cascade_root_alerts": 0}],
)
def test_a_mix_config_that_cannot_work_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MixConfig(**kwargs)


def test_proportions_must_be_positive_shares() -> None:
    with pytest.raises(ValueError):
        MixProportions(new=-1)
    with pytest.raises(ValueError):
        MixProportions(**{kind: 0.0 for kind in SEND_KINDS})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("rate,batch", [(1000.0, 50), (20_000.0, 100), (10.0, 1)])
def test_the_token_bucket_paces_at_the_rate(rate: float, batch: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst=max(batch, rate * 0.1), clock=clock)
    sent = 0
    for _ in range(200):  # sending as soon as allowed: the clock only moves by the waits
        clock.now += bucket.delay(batch)
        sent += batch
    assert sent / (clock.now - 100.0) == pytest.approx(rate, rel=0.01)


def test_the_token_bucket_does_not_let_an_idle_spell_become_an_unbounded_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000.0, burst=100, clock=clock)
    clock.now += 60  # a minute idle: only `burst` tokens saved up
    assert bucket.delay(100) == 0
    assert bucket.delay(100) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs,problem",
    [
        ({"duration_s": 5, "alerts": 10}, "not both"),
        ({"services": 3, "groups": 5}, "at least groups"),
        ({"window": 10, "batch": 100}, "at least one batch"),
        ({"via": "carrier-pigeon"}, "bridge"),
        ({"rate": -1}, "greater than or equal"),
    ],
)
def test_a_storm_config_that_cannot_work_is_refused(kwargs: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        StormConfig(**kwargs)


@pytest.mark.parametrize("rate,batch,limit", [(0, 100, 100), (2000, 100, 100), (100, 100, 5), (1, 100, 1)])
def test_at_low_rates_a_body_holds_no_more_than_a_tick_of_alerts(rate: float, batch: int, limit: int) -> None:
    assert StormConfig(rate=rate, batch=batch).batch_limit() == limit
