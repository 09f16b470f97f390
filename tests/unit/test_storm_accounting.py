"""The storm's account adds up exactly: per event id, sends and outcomes matched as a multiset; repeats, flaps,
resolves, surplus outcomes, doubled records, missing outcomes and other senders' alerts each counted as such."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

from bus.events import AlertOutcome
from deploy.storm.accounting import OffsetRanges, StormAccount, percentile

TOPIC = "test.opswarm.alerts.v1"
ORIGIN = 1000.0


def outcome(event_id: str, offset: int, kind: str = "merged", incident: str | None = "inc-1") -> AlertOutcome:
    return AlertOutcome(event_id=event_id, offset=offset, kind=kind, incident_id=incident)  # type: ignore[arg-type]


def account() -> StormAccount:
    return StormAccount(TOPIC, origin=ORIGIN)


def test_every_alert_sent_and_triaged_is_accounted_with_its_latency() -> None:
    acc = account()
    acc.record_sent(["a", "b", "c"], ORIGIN + 0.5)
    acc.record_triaged(TOPIC, 0, [outcome("a", 0, "opened", "inc-1"), outcome("b", 1), outcome("c", 2)], ORIGIN + 0.6)
    totals = acc.totals()
    assert (totals.sent, totals.accounted, totals.lost, totals.surplus, totals.doubled) == (3, 3, 0, 0, 0)
    assert totals.kinds == {"opened": 1, "merged": 2, "duplicate": 0, "suppressed": 0}
    assert totals.incidents == 1
    assert totals.p50_ms == pytest.approx(100.0) and totals.p99_ms == pytest.approx(100.0)


def test_repeats_of_one_event_id_are_a_multiset() -> None:
    acc = account()
    for at in (0.1, 0.2, 0.3):  # the same alert, same startsAt: one event id, sent three times
        acc.record_sent(["x"], ORIGIN + at)
    acc.record_triaged(TOPIC, 2, [outcome("x", 10, "opened", "inc-9"), outcome("x", 11, "duplicate")], ORIGIN + 1.0)
    assert (acc.accounted, acc.outstanding) == (2, 1)
    acc.record_triaged(TOPIC, 2, [outcome("x", 12, "duplicate")], ORIGIN + 2.0)
    totals = acc.totals()
    assert (totals.accounted, totals.lost, totals.surplus) == (3, 0, 0)
    assert totals.kinds["duplicate"] == 2 and totals.kinds["opened"] == 1
    # First come, first served: the first outcome is the first send's.
    assert sorted(acc._latencies_ms) == pytest.approx([800.0, 900.0, 1700.0])


def test_an_outcome_observed_before_its_send_is_registered_waits_for_it() -> None:
    acc = account()
    # The bridge answered after Kafka acknowledged; monitoring was quicker than the answer.
    acc.record_triaged(TOPIC, 0, [outcome("early", 5, "opened", "inc-2")], ORIGIN + 0.30)
    assert acc.accounted == 0
    acc.record_sent(["early"], ORIGIN + 0.25)
    totals = acc.totals()
    assert (totals.accounted, totals.lost, totals.surplus, totals.foreign) == (1, 0, 0, 0)
    assert totals.p50_ms == pytest.approx(50.0)


def test_outcomes_beyond_the_sends_of_an_id_are_surplus_not_accounted() -> None:
    acc = account()
    acc.record_sent(["r"], ORIGIN)  # a retried request whose first attempt landed too: two records
    acc.record_triaged(TOPIC, 1, [outcome("r", 0, "opened"), outcome("r", 1, "duplicate")], ORIGIN + 0.1)
    totals = acc.totals()
    assert (totals.sent, totals.accounted, totals.lost, totals.surplus) == (1, 1, 0, 1)
    assert sum(totals.kinds.values()) == 1


def test_a_record_seen_twice_is_doubled_and_accounted_once() -> None:
    acc = account()
    acc.record_sent(["d", "d"], ORIGIN)
    acc.record_triaged(TOPIC, 3, [outcome("d", 7, "opened")], ORIGIN + 0.1)
    acc.record_triaged(TOPIC, 3, [outcome("d", 7, "opened")], ORIGIN + 0.2)  # the same record again
    totals = acc.totals()
    assert (totals.accounted, totals.lost, totals.doubled, totals.surplus) == (1, 1, 1, 0)
    assert totals.doubled_examples == ((3, 7, "d"),)


def test_the_same_offset_in_another_partition_is_another_record() -> None:
    acc = account()
    acc.record_sent(["p", "q"], ORIGIN)
    acc.record_triaged(TOPIC, 0, [outcome("p", 7)], ORIGIN + 0.1)
    acc.record_triaged(TOPIC, 1, [outcome("q", 7)], ORIGIN + 0.1)
    assert (acc.accounted, acc.doubled) == (2, 0)


def test_missing_outcomes_are_lost() -> None:
    acc = account()
    acc.record_sent([f"m{i}" for i in range(10)], ORIGIN)
    acc.record_triaged(TOPIC, 0, [outcome(f"m{i}", i) for i in range(7)], ORIGIN + 1)
    totals = acc.totals()
    assert (totals.sent, totals.accounted, totals.lost) == (10, 7, 3)


def test_other_senders_and_other_topics_are_not_ours() -> None:
    acc = account()
    acc.record_sent(["ours"], ORIGIN)
    acc.record_triaged(TOPIC, 0, [outcome("theirs", 0, "opened", "inc-x"), outcome("ours", 1)], ORIGIN + 0.1)
    acc.record_triaged("other.opswarm.alerts.v1", 0, [outcome("ours", 2)], ORIGIN + 0.1)
    totals = acc.totals()
    assert (totals.accounted, totals.foreign, totals.surplus, totals.incidents) == (1, 1, 0, 0)
    assert acc.foreign_records == 1


def test_incidents_are_the_distinct_incidents_opened() -> None:
    acc = account()
    acc.record_sent(["a", "b", "c", "d"], ORIGIN)
    outcomes = [outcome("a", 0, "opened", "i1"), outcome("b", 1, "opened", "i2"), outcome("c", 2, "merged", "i1"),
                outcome("d", 3, "opened", "i2")]  # fmt: skip
    acc.record_triaged(TOPIC, 0, outcomes, ORIGIN)
    assert acc.totals().incidents == 2


def test_the_series_has_every_second_with_sends_accounts_and_latencies() -> None:
    acc = account()
    acc.record_sent(["a", "b"], ORIGIN + 0.2)
    acc.record_sent(["c"], ORIGIN + 1.5)
    acc.record_triaged(TOPIC, 0, [outcome("a", 0), outcome("b", 1)], ORIGIN + 0.4)
    acc.record_triaged(TOPIC, 0, [outcome("c", 2)], ORIGIN + 3.5)
    series = acc.series()
    assert [(s.second, s.sent, s.accounted) for s in series] == [(0, 2, 2), (1, 1, 0), (2, 0, 0), (3, 0, 1)]
    assert series[0].p50_ms == pytest.approx(200.0) and series[3].p99_ms == pytest.approx(2000.0)
    assert series[1].p50_ms is None


@dataclass
class Scenario:
    """A random storm's sends and outcomes, with the account worked out the simple way."""

    sends: list[tuple[float, list[str]]] = field(default_factory=list)
    records: list[tuple[float, int, list[AlertOutcome]]] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)


def random_scenario(seed: int) -> Scenario:
    rng = random.Random(seed)
    scenario = Scenario()
    sent: Counter[str] = Counter()
    recorded: Counter[str] = Counter()  # distinct records per id
    next_offset = [0] * 6
    ids = [f"e{i}" for i in range(300)]
    for step in range(400):
        at = ORIGIN + step * 0.01
        batch = [rng.choice(ids[: 50 + step // 2]) for _ in range(rng.randint(1, 5))]  # repeats and flaps
        scenario.sends.append((at, batch))
        sent.update(batch)
        for event_id in batch:
            if rng.random() < 0.1:
                continue  # missing outcome
            for _ in range(2 if rng.random() < 0.05 else 1):  # surplus: the record landed twice
                partition = rng.randrange(6)
                record = outcome(event_id, next_offset[partition], rng.choice(["opened", "merged", "duplicate",
                                                                               "suppressed"]))  # fmt: skip
                next_offset[partition] += 1
                recorded[event_id] += 1
                copies = 2 if rng.random() < 0.03 else 1  # doubled: the same record twice
                for _ in range(copies):
                    scenario.records.append((at + rng.uniform(-0.05, 0.5), partition, [record]))
                scenario.expected["doubled"] = scenario.expected.get("doubled", 0) + copies - 1
    foreign = outcome("not-ours", next_offset[0], "opened")
    scenario.records.append((ORIGIN, 0, [foreign]))
    accounted = sum(min(n, recorded[event_id]) for event_id, n in sent.items())
    scenario.expected |= {
        "sent": sum(sent.values()), "accounted": accounted, "lost": sum(sent.values()) - accounted,
        "surplus": sum(max(0, recorded[event_id] - n) for event_id, n in sent.items()), "foreign": 1,
    }  # fmt: skip
    return scenario


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("outcomes_first", [False, True])
def test_a_random_storm_adds_up_exactly(seed: int, outcomes_first: bool) -> None:
    scenario = random_scenario(seed)
    acc = account()
    events = [(at, 0, batch) for at, batch in scenario.sends]
    events += [(at, 1, (partition, records)) for at, partition, records in scenario.records]
    events.sort(key=lambda e: (e[0], e[1] if not outcomes_first else -e[1]))
    for at, is_outcome, payload in events:
        if is_outcome:
            partition, records = payload
            acc.record_triaged(TOPIC, partition, records, at)
        else:
            acc.record_sent(payload, at)
    totals = acc.totals()
    got = {"sent": totals.sent, "accounted": totals.accounted, "lost": totals.lost, "surplus": totals.surplus,
           "foreign": totals.foreign, "doubled": totals.doubled}  # fmt: skip
    assert got == {key: scenario.expected.get(key, 0) for key in got}
    assert sum(totals.kinds.values()) == totals.accounted
    assert totals.accounted + totals.lost == totals.sent
    assert sum(s.sent for s in acc.series()) == totals.sent
    assert sum(s.accounted for s in acc.series()) == totals.accounted


@pytest.mark.parametrize(
    "offsets,doubled",
    [
        ([0, 1, 2, 3], []),
        ([5, 6, 5], [5]),
        ([10, 12, 11, 11, 12, 13, 10], [11, 12, 10]),
        ([3, 1, 2, 0, 2], [2]),
        ([100, 0, 50, 49, 51, 50], [50]),
    ],
)
def test_offset_ranges_tell_a_record_seen_before(offsets: list[int], doubled: list[int]) -> None:
    ranges = OffsetRanges()
    assert [o for o in offsets if not ranges.add(o)] == doubled
    assert len(ranges) == len(set(offsets))


def test_offset_ranges_stay_small_for_consecutive_offsets() -> None:
    ranges = OffsetRanges()
    for offset in range(100_000):
        assert ranges.add(offset)
    assert ranges._starts == [0] and ranges._ends == [100_000]


@pytest.mark.parametrize("values,q,expected", [([], 50, None), ([7.0], 99, 7.0), ([1, 2, 3, 4], 50, 2),
                                               (list(range(1, 101)), 99, 99), (list(range(1, 101)), 100, 100)])
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected
