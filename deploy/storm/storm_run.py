"""One storm: paced, closed-loop sending of the alert mix, then waiting until every alert sent is accounted.

- Pacing: a token bucket at the target rate (alerts/s; 0: as fast as the way in accepts). Its sleep is the only
  sleep; everything else waits for a condition (a send slot, room in the window, a new outcome).
- Closed loop: at most `window` alerts may be sent (or in flight) and not yet accounted; sending waits for room.
  Nothing accounted for `drain_timeout_s` while the window is full stops the sending early (`stalled`).
- At most `concurrency` batches are in flight (HTTP requests, or batches awaiting Kafka's acknowledgements).
- Drain: after the last send, wait until every alert sent is accounted, or until nothing new was accounted for
  `drain_timeout_s`.

`run_storm` prints nothing: it reports progress through a callback and returns a StormReport (the CLI and a
benchmark format it).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bus.config import KafkaConfig
from bus.topics import ALERTS
from deploy.storm.accounting import AccountTotals, SecondStats, StormAccount
from deploy.storm.alert_mix import SEND_KINDS, AlertBatch, AlertMix, MixConfig, MixProportions, SendKind
from deploy.storm.observer import KafkaUnreachable, TriageObserver
from deploy.storm.senders import AlertSender, BridgeSender, KafkaSender, SendFailed

log = logging.getLogger(__name__)

DEFAULT_DURATION_S = 10.0
PACE_TICK_S = 0.05  # at low rates a body holds at most this long's worth of alerts
UNPACED_NOMINAL_RATE = 20_000.0  # the mix's logical clock when the rate is not limited
PROGRESS_INTERVAL_S = 0.25


class StormFailed(Exception):
    """The storm could not run or was aborted: unreachable, refused, or alerts not taken in time."""


class StormConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    rate: float = Field(default=2000.0, ge=0, description="target alerts/s; 0: as fast as accepted")
    duration_s: float | None = Field(default=None, gt=0)
    alerts: int | None = Field(default=None, gt=0)
    services: int = Field(default=200, ge=1)
    groups: int = Field(default=20, ge=1)
    via: Literal["bridge", "kafka"] = "bridge"
    batch: int = Field(default=100, ge=1, le=10_000)
    concurrency: int = Field(default=8, ge=1, le=1024)
    window: int = Field(default=20_000, ge=1)
    drain_timeout_s: float = Field(default=60.0, gt=0)
    seed: int = 1
    run_id: str = Field(default_factory=lambda: secrets.token_hex(3), pattern=r"^[a-z0-9]{1,12}$")
    plot_path: Path | None = None
    proportions: MixProportions = Field(default_factory=MixProportions)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.duration_s is not None and self.alerts is not None:
            raise ValueError("give a duration or a number of alerts, not both")
        if self.services < self.groups:
            raise ValueError(f"services ({self.services}) must be at least groups ({self.groups})")
        if self.window < self.batch:
            raise ValueError(f"window ({self.window}) must be at least one batch ({self.batch})")
        return self

    def batch_limit(self) -> int:
        """Alerts per body: `batch`, and at a low rate no more than PACE_TICK_S worth of alerts."""
        return self.batch if self.rate == 0 else max(1, min(self.batch, int(self.rate * PACE_TICK_S)))


@dataclass(frozen=True)
class StormProgress:
    phase: Literal["sending", "draining"]
    elapsed_s: float
    sent: int
    accounted: int
    in_flight: int  # sent or being sent, not accounted yet
    alerts_per_s: float  # sent over the last second or so
    p99_ms: float | None  # of the latest accounted alerts


@dataclass
class StormReport:
    run_id: str
    via: str
    namespaces: list[str]
    totals: AccountTotals
    sent_by_kind: dict[SendKind, int]
    send_seconds: float
    # From the first send to the last outcome observed: what the end-to-end rate is measured over.
    accounted_seconds: float
    drained: bool
    stalled: str = ""
    retries: int = 0
    triage_records: int = 0
    series: list[SecondStats] = field(default_factory=list)
    plot_path: Path | None = None
    plot_error: str = ""

    @property
    def alerts_per_s(self) -> float:
        """Sustained end to end: alerts accounted per second, from the first send to the last outcome observed."""
        return self.totals.accounted / self.accounted_seconds if self.accounted_seconds > 0 else 0.0

    @property
    def send_rate(self) -> float:
        """Alerts sent per second of the sending phase."""
        return self.totals.sent / self.send_seconds if self.send_seconds > 0 else 0.0

    def line(self) -> str:
        t = self.totals
        return (f"storm: sent={t.sent} accounted={t.accounted} lost={t.lost} alerts_per_s={round(self.alerts_per_s)} "
                f"p50_ms={round(t.p50_ms or 0)} p99_ms={round(t.p99_ms or 0)} incidents={t.incidents}")  # fmt: skip

    def problems(self) -> list[str]:
        """Why the storm failed its account (empty: every alert accounted, no record doubled)."""
        problems = []
        if self.totals.lost:
            waited = "" if self.drained else " (no outcome came for the drain timeout: is monitoring running?)"
            problems.append(f"{self.totals.lost} alerts sent were never accounted{waited}")
        if self.totals.doubled:
            problems.append(f"{self.totals.doubled} alert records got more than one outcome (doubled)")
        if self.stalled:
            problems.append(self.stalled)
        return problems


class TokenBucket:
    """Pacing at `rate` tokens/s with bursts up to `burst`: `delay(n)` takes n tokens and says how long to wait."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._tokens = 0.0
        self._at = clock()

    def delay(self, tokens: int) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        self._tokens -= tokens  # may go below 0: the debt is the wait
        return max(0.0, -self._tokens / self._rate)


async def run_storm(
    config: StormConfig, kafka: KafkaConfig, bridge_url: str, token: str | None,
    progress: Callable[[StormProgress], None] | None = None,
) -> StormReport:  # fmt: skip
    """Run one storm and account for it; StormFailed when it cannot start or a batch cannot be delivered."""
    account = StormAccount(kafka.topic(ALERTS), origin=time.monotonic())  # second 0 moves to the first send
    mix = AlertMix(
        MixConfig(services=config.services, groups=config.groups, seed=config.seed, run_id=config.run_id,
                  proportions=config.proportions, nominal_rate=config.rate or UNPACED_NOMINAL_RATE),
        started_at_us=time.time_ns() // 1000,
    )  # fmt: skip
    sender: AlertSender
    if config.via == "bridge":
        sender = BridgeSender(bridge_url, token, concurrency=config.concurrency)
    else:
        sender = KafkaSender(kafka)
    observer = TriageObserver(kafka, account)
    run = _Run(config, mix, sender, account, observer, progress)
    try:
        await observer.start()  # at the end of the triage topic before anything is sent
        try:
            await sender.start()
            try:
                await run.execute()
            finally:
                await sender.stop()
        finally:
            await observer.stop()
    except (KafkaUnreachable, SendFailed) as exc:
        raise StormFailed(str(exc)) from None
    except ExceptionGroup as group:
        failure = _first_failure(group)
        if failure is None:
            raise
        raise StormFailed(str(failure) if isinstance(failure, SendFailed)
                          else f"Kafka failed during the storm: {type(failure).__name__}: {failure}") from None
    report = StormReport(
        run_id=config.run_id, via=config.via, namespaces=mix.namespaces, totals=account.totals(),
        sent_by_kind=dict(mix.sent_by_kind), send_seconds=run.send_seconds,
        accounted_seconds=max(0.0, account.last_accounted_at - account.origin), drained=run.drained,
        stalled=run.stalled, retries=sender.retries, triage_records=observer.records,
        series=account.series(),
    )  # fmt: skip
    if config.plot_path is not None:
        # matplotlib takes half a second to import: only when a plot is drawn, not with every `opswarm` command.
        from deploy.storm.storm_plot import draw_storm_plot

        title = f"opswarm storm {config.run_id} via {config.via}"
        try:
            report.plot_path = await asyncio.to_thread(draw_storm_plot, report.series, config.plot_path, title)
        except OSError as exc:
            report.plot_error = f"{config.plot_path}: {exc.strerror or exc}"
            log.warning("storm plot not written", extra={"path": str(config.plot_path), "error": str(exc)})
    log.info("storm done", extra={"run_id": config.run_id, "line": report.line()})
    return report


class _Run:
    def __init__(
        self, config: StormConfig, mix: AlertMix, sender: AlertSender, account: StormAccount,
        observer: TriageObserver, progress: Callable[[StormProgress], None] | None,
    ) -> None:  # fmt: skip
        self.config = config
        self.mix = mix
        self.sender = sender
        self.account = account
        self.observer = observer
        self.progress = progress
        self.handed = 0  # alerts given to the sender (accepted or in flight)
        self.phase: Literal["sending", "draining"] = "sending"
        self.started_at = time.monotonic()
        self.last_accepted_at = self.started_at
        self.send_seconds = 0.0
        self.drained = False
        self.stalled = ""

    async def execute(self) -> None:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.observer.run(stop))
            if self.progress is not None:
                tasks.create_task(self._report_progress(stop))
            try:
                self.started_at = self.account.origin = time.monotonic()  # second 0 of the series
                await self._send_all()
                self.send_seconds = self.last_accepted_at - self.started_at
                self.phase = "draining"
                self.drained = not self.stalled and await self._drain()  # stalled: waited long enough already
            finally:
                stop.set()

    async def _send_all(self) -> None:
        config = self.config
        limit = config.batch_limit()
        bucket = TokenBucket(config.rate, max(limit, config.rate * 0.1)) if config.rate > 0 else None
        duration_s = config.duration_s or DEFAULT_DURATION_S
        ends_at = self.started_at + duration_s if config.alerts is None else math.inf
        remaining = config.alerts if config.alerts is not None else math.inf
        slots = asyncio.Semaphore(config.concurrency)
        async with asyncio.TaskGroup() as sends:
            while remaining > 0 and time.monotonic() < ends_at:
                size = int(min(limit, remaining))
                await slots.acquire()
                if not await self._room_in_window(size):
                    slots.release()
                    break
                if bucket is not None:
                    wait_s = bucket.delay(size)
                    if wait_s > 0:
                        await asyncio.sleep(wait_s)  # pacing
                if time.monotonic() >= ends_at:
                    slots.release()
                    break
                batch = self.mix.next_batch(size)
                remaining -= batch.size
                self.handed += batch.size
                sends.create_task(self._send_one(batch, slots))

    async def _send_one(self, batch: AlertBatch, slots: asyncio.Semaphore) -> None:
        try:
            accepted = await self.sender.send(batch)
        finally:
            slots.release()
        if len(accepted.event_ids) != batch.size:
            log.warning("accepted count differs from alerts sent", extra={"sent": batch.size,
                                                                          "accepted": len(accepted.event_ids)})
        self.account.record_sent(accepted.event_ids, accepted.sent_at)
        self.last_accepted_at = max(self.last_accepted_at, accepted.accepted_at)

    async def _room_in_window(self, size: int) -> bool:
        """Wait until `size` more alerts fit in the window; False when nothing was accounted for the drain timeout."""
        while True:
            if self.handed - self.account.accounted + size <= self.config.window:
                return True
            accounted = self.account.accounted
            try:
                await asyncio.wait_for(self._accounted_beyond(accounted), self.config.drain_timeout_s)
            except TimeoutError:
                self.stalled = (f"sending stopped early: the window of {self.config.window} alerts was full and "
                                f"nothing was accounted for {self.config.drain_timeout_s:g} s")  # fmt: skip
                log.warning("storm stalled", extra={"window": self.config.window, "accounted": accounted})
                return False

    async def _drain(self) -> bool:
        """True once everything sent is accounted; False when nothing new was accounted for the drain timeout."""
        while self.account.outstanding > 0:
            accounted = self.account.accounted
            try:
                await asyncio.wait_for(self._accounted_beyond(accounted), self.config.drain_timeout_s)
            except TimeoutError:
                return False
        return True

    async def _accounted_beyond(self, accounted: int) -> None:
        changed = self.observer.changed
        while True:
            changed.clear()
            if self.account.accounted > accounted:
                return
            await changed.wait()

    async def _report_progress(self, stop: asyncio.Event) -> None:
        assert self.progress is not None
        recent: collections.deque[tuple[float, int]] = collections.deque(maxlen=int(1 / PROGRESS_INTERVAL_S) + 1)
        while True:
            now = time.monotonic()
            recent.append((now, self.account.sent))
            then, sent_then = recent[0]
            span = now - then
            self.progress(StormProgress(
                phase=self.phase, elapsed_s=now - self.started_at, sent=self.account.sent,
                accounted=self.account.accounted, in_flight=self.handed - self.account.accounted,
                alerts_per_s=(self.account.sent - sent_then) / span if span > 0 else 0.0,
                p99_ms=self.account.recent_p99_ms(),
            ))  # fmt: skip
            if stop.is_set():
                return
            try:
                await asyncio.wait_for(stop.wait(), PROGRESS_INTERVAL_S)
            except TimeoutError:
                pass


def _first_failure(group: BaseExceptionGroup) -> BaseException | None:
    """The first SendFailed or Kafka failure in a (nested) exception group; None if there is none."""
    matched = group.subgroup(lambda exc: isinstance(exc, (SendFailed, KafkaError, OSError, TimeoutError)))
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


def kinds_line(sent_by_kind: dict[SendKind, int]) -> str:
    """`new=N repeat=N ...` in the mix's order."""
    return " ".join(f"{kind}={sent_by_kind.get(kind, 0)}" for kind in SEND_KINDS)
