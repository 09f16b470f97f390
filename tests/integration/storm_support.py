"""Test support for `opswarm storm`: the bridge served in-process, and a stand-in for monitoring's verdicts.

`StandInTriage` reads the alerts topic of a test namespace and publishes, per fetched batch of one partition, one
AlertsTriaged with an outcome for every record (as monitoring does), so the storm can be accounted end to end
without the monitoring agent. It can leave outcomes out (lost alerts) and publish a record twice (doubled).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from bus.admin import partition_counts
from bus.bridge.server import BridgeServer
from bus.bridge.settings import BridgeConfig, BridgeSettings
from bus.codec import decode_event
from bus.config import KafkaConfig
from bus.events import AlertOutcome, AlertReceived, AlertsTriaged
from bus.producer import EventPublisher
from bus.topics import ALERTS

BRIDGE_TOKEN = "storm-test-token"
_STOP_TIMEOUT_S = 30.0


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def serving_bridge(kafka: KafkaConfig) -> AsyncIterator[str]:
    """The bridge on a free port of this process, publishing into `kafka`'s namespace; its URL once ready."""
    config = BridgeConfig(host="127.0.0.1", port=0, token=SecretStr(BRIDGE_TOKEN))
    server = BridgeServer(BridgeSettings(kafka=kafka, bridge=config))
    port = server.bind()
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the bridge stopped serving")
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(f"{url}/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await until(ready, 30, "the bridge is ready")
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, _STOP_TIMEOUT_S)


class StandInTriage:
    """Monitoring's AlertsTriaged for every alert record of the namespace's alerts topic, from its end at start.

    Outcomes: the first alert of a namespace `opened` its incident; an event id seen before is a `duplicate`; the
    resolve of an alert that never fired is `suppressed`; anything else `merged`. `drop_every` leaves every n-th
    outcome out; `double_first` publishes the first AlertsTriaged twice.
    """

    def __init__(self, kafka: KafkaConfig, *, drop_every: int = 0, double_first: bool = False) -> None:
        self._kafka = kafka
        self._topic = kafka.topic(ALERTS)
        self._drop_every = drop_every
        self._double_first = double_first
        self._consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, isolation_level="read_committed",
                                          enable_auto_commit=False)  # fmt: skip
        self._publisher = EventPublisher(kafka, client_id="storm-test-triage")
        self._incidents: dict[str, str] = {}
        self._seen_ids: set[str] = set()
        self._fired: set[str] = set()
        self.records = 0
        self.dropped = 0
        self.doubled = 0

    async def __aenter__(self) -> StandInTriage:
        partitions = (await partition_counts(self._kafka, [self._topic]))[self._topic]
        assigned = [TopicPartition(self._topic, p) for p in range(partitions)]
        await asyncio.wait_for(self._consumer.start(), 30)
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for partition in assigned:
            await self._consumer.position(partition)
        await self._publisher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._publisher.stop()
        await asyncio.wait_for(self._consumer.stop(), 30)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await asyncio.wait_for(self._consumer.getmany(timeout_ms=100, max_records=500), 30)
            for partition, records in batches.items():
                outcomes = []
                for record in records:
                    self.records += 1
                    event = decode_event(record.value)
                    assert isinstance(event, AlertReceived)
                    outcome = self._outcome(event, record.offset)
                    if self._drop_every and self.records % self._drop_every == 0:
                        self.dropped += 1
                        continue
                    outcomes.append(outcome)
                if not outcomes:
                    continue
                triaged = AlertsTriaged(produced_by="storm-test", source_topic=self._topic,
                                        source_partition=partition.partition, outcomes=outcomes)  # fmt: skip
                await self._publisher.publish(triaged)
                if self._double_first and not self.doubled:
                    again = triaged.model_copy(update={"event_id": f"doubled-{triaged.event_id}"})
                    await self._publisher.publish(again)
                    self.doubled = len(outcomes)

    def _outcome(self, event: AlertReceived, offset: int) -> AlertOutcome:
        namespace = event.labels.get("namespace", "")
        fingerprint = event.source_fingerprint or ""
        if event.event_id in self._seen_ids:
            kind, incident = "duplicate", self._incidents.get(namespace)
        elif event.status == "resolved" and fingerprint not in self._fired:
            kind, incident = "suppressed", None
        elif namespace not in self._incidents:
            kind, incident = "opened", self._incidents.setdefault(namespace, f"inc-{namespace}")
        else:
            kind, incident = "merged", self._incidents[namespace]
        self._seen_ids.add(event.event_id)
        if event.status == "firing":
            self._fired.add(fingerprint)
        return AlertOutcome(event_id=event.event_id, offset=offset, kind=kind, incident_id=incident)  # type: ignore[arg-type]
