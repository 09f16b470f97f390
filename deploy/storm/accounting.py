"""The storm's account: every alert sent is opened, merged, duplicate or suppressed, or else it is lost.

Pure bookkeeping (no I/O, no clock of its own: callers pass monotonic seconds). The same event id can be sent
several times on purpose (a repeat of an alert with the same startsAt has the same id at the bridge), so the
account is a multiset: per event id, the sends and the outcomes are matched first-come first-served.

- An outcome is identified by its alert record (source partition, offset): a record seen twice is `doubled` (a
  bug to report) and is not accounted twice.
- accounted = Σ min(sent, seen) per event id; lost = sent − accounted; the four outcome kinds add up to accounted.
- Outcomes beyond the sends of their id are `surplus` (a retried request whose first attempt landed after all);
  outcomes of ids never sent are `foreign` (alerts of other senders on the same topic). Both are known only at
  the end: an outcome may be observed before its send is registered (the bridge answers after Kafka acknowledged,
  and monitoring may be quicker than that answer), so until then it waits for its send.
- Latency of an accounted alert = outcome observed − alert sent; an AlertsTriaged record is committed in the same
  Kafka transaction as the incident events it accounts for, so this is also the latency to the incident event.
- `incidents`: distinct incident ids of `opened` outcomes.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bus.events import AlertOutcome

OUTCOME_KINDS = ("opened", "merged", "duplicate", "suppressed")
RECENT_LATENCIES = 5000  # the progress display's p99 is over this many latest accounted alerts
_DOUBLED_EXAMPLES = 10


class OffsetRanges:
    """Offsets of one partition seen so far, as sorted disjoint [start, end) ranges (mostly one)."""

    __slots__ = ("_starts", "_ends")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, offset: int) -> bool:
        """Record an offset; False when it was seen before."""
        starts, ends = self._starts, self._ends
        if ends and offset == ends[-1]:  # the usual case: the next offset of the last range
            ends[-1] = offset + 1
            return True
        index = bisect.bisect_right(starts, offset)
        if index and offset < ends[index - 1]:
            return False
        joins_left = index > 0 and ends[index - 1] == offset
        joins_right = index < len(starts) and starts[index] == offset + 1
        if joins_left and joins_right:
            ends[index - 1] = ends[index]
            del starts[index], ends[index]
        elif joins_left:
            ends[index - 1] = offset + 1
        elif joins_right:
            starts[index] = offset
        else:
            starts.insert(index, offset)
            ends.insert(index, offset + 1)
        return True

    def __len__(self) -> int:
        return sum(end - start for start, end in zip(self._starts, self._ends, strict=True))


@dataclass(frozen=True, slots=True)
class _Seen:
    observed_at: float
    kind: str
    incident_id: str | None


@dataclass(slots=True)
class _Second:
    sent: int = 0
    accounted: int = 0
    latencies_ms: array = field(default_factory=lambda: array("d"))


@dataclass(frozen=True)
class SecondStats:
    """One second of the run (from the account's origin): alerts sent and accounted, latency of those accounted."""

    second: int
    sent: int
    accounted: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class AccountTotals:
    sent: int
    accounted: int
    lost: int
    kinds: dict[str, int]
    incidents: int
    doubled: int
    surplus: int
    foreign: int
    p50_ms: float | None
    p99_ms: float | None
    doubled_examples: tuple[tuple[int, int, str], ...] = ()  # (source partition, offset, event id)


class StormAccount:
    """Sends and outcomes of one storm; `origin` is the monotonic instant second 0 of the series starts at (set it
    before the first send)."""

    def __init__(self, source_topic: str, *, origin: float) -> None:
        self.source_topic = source_topic
        self.origin = origin
        self.sent = 0
        self.accounted = 0
        # When the last alert accounted so far was observed (monotonic; the origin while none was).
        self.last_accounted_at = origin
        self.doubled = 0
        self.foreign_records = 0  # records of another alerts topic (another namespace's monitoring)
        self.kinds: Counter[str] = Counter({kind: 0 for kind in OUTCOME_KINDS})
        self._incidents: set[str] = set()
        self._sent_ids: dict[str, int] = {}
        self._waiting_sends: dict[str, list[float]] = {}
        self._waiting_outcomes: dict[str, list[_Seen]] = {}
        self._offsets: dict[int, OffsetRanges] = {}
        self._doubled_examples: list[tuple[int, int, str]] = []
        self._latencies_ms = array("d")
        self._seconds: dict[int, _Second] = {}

    @property
    def outstanding(self) -> int:
        """Alerts sent and not accounted yet."""
        return self.sent - self.accounted

    @property
    def incidents(self) -> int:
        return len(self._incidents)

    def record_sent(self, event_ids: Sequence[str], sent_at: float) -> None:
        """Alerts accepted (by the bridge, or acknowledged by Kafka) that were first sent at `sent_at`."""
        self.sent += len(event_ids)
        self._second(sent_at).sent += len(event_ids)
        sent_ids, waiting_outcomes, waiting_sends = self._sent_ids, self._waiting_outcomes, self._waiting_sends
        for event_id in event_ids:
            sent_ids[event_id] = sent_ids.get(event_id, 0) + 1
            seen = waiting_outcomes.get(event_id)
            if seen:
                outcome = seen.pop(0)
                if not seen:
                    del waiting_outcomes[event_id]
                self._match(sent_at, outcome)
            else:
                waiting_sends.setdefault(event_id, []).append(sent_at)

    def record_triaged(
        self, source_topic: str, source_partition: int, outcomes: Iterable[AlertOutcome], observed_at: float
    ) -> None:
        """The outcomes of one AlertsTriaged record, observed at `observed_at`."""
        if source_topic != self.source_topic:
            self.foreign_records += 1
            return
        offsets = self._offsets.get(source_partition)
        if offsets is None:
            offsets = self._offsets[source_partition] = OffsetRanges()
        waiting_sends = self._waiting_sends
        for outcome in outcomes:
            if not offsets.add(outcome.offset):
                self.doubled += 1
                if len(self._doubled_examples) < _DOUBLED_EXAMPLES:
                    self._doubled_examples.append((source_partition, outcome.offset, outcome.event_id))
                continue
            seen = _Seen(observed_at, outcome.kind, outcome.incident_id)
            sends = waiting_sends.get(outcome.event_id)
            if sends:
                sent_at = sends.pop(0)
                if not sends:
                    del waiting_sends[outcome.event_id]
                self._match(sent_at, seen)
            else:
                self._waiting_outcomes.setdefault(outcome.event_id, []).append(seen)

    def recent_p99_ms(self) -> float | None:
        """p99 latency of the latest accounted alerts (for a progress display)."""
        return percentile(sorted(self._latencies_ms[-RECENT_LATENCIES:]), 99)

    def totals(self) -> AccountTotals:
        surplus = foreign = 0
        for event_id, seen in self._waiting_outcomes.items():
            if event_id in self._sent_ids:
                surplus += len(seen)
            else:
                foreign += len(seen)
        latencies = sorted(self._latencies_ms)
        return AccountTotals(
            sent=self.sent, accounted=self.accounted, lost=self.sent - self.accounted,
            kinds={kind: self.kinds[kind] for kind in sorted(self.kinds, key=_kind_order)},
            incidents=len(self._incidents), doubled=self.doubled, surplus=surplus, foreign=foreign,
            p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
            doubled_examples=tuple(self._doubled_examples),
        )  # fmt: skip

    def series(self) -> list[SecondStats]:
        """Every second from 0 to the last one with anything in it (empty seconds included)."""
        if not self._seconds:
            return []
        stats = []
        for second in range(min(0, min(self._seconds)), max(self._seconds) + 1):
            bucket = self._seconds.get(second) or _Second()
            latencies = sorted(bucket.latencies_ms)
            stats.append(SecondStats(second, bucket.sent, bucket.accounted,
                                     percentile(latencies, 50), percentile(latencies, 99)))  # fmt: skip
        return stats

    def _match(self, sent_at: float, seen: _Seen) -> None:
        self.accounted += 1
        self.last_accounted_at = max(self.last_accounted_at, seen.observed_at)
        self.kinds[seen.kind] += 1
        if seen.kind == "opened" and seen.incident_id:
            self._incidents.add(seen.incident_id)
        latency_ms = max(0.0, seen.observed_at - sent_at) * 1000.0
        self._latencies_ms.append(latency_ms)
        bucket = self._second(seen.observed_at)
        bucket.accounted += 1
        bucket.latencies_ms.append(latency_ms)

    def _second(self, at: float) -> _Second:
        second = math.floor(at - self.origin)
        bucket = self._seconds.get(second)
        if bucket is None:
            bucket = self._seconds[second] = _Second()
        return bucket


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None for none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _kind_order(kind: str) -> int:
    return OUTCOME_KINDS.index(kind) if kind in OUTCOME_KINDS else len(OUTCOME_KINDS)
