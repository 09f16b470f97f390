"""A Kafka broker of a test's own, to stop and start at will: the local stack's Kafka component (one KRaft node,
the same jars and generated config) on free ports, with its state in a temporary directory."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from bus.admin import partition_counts
from bus.config import KafkaConfig
from deploy.localstack.component import wait_ready
from deploy.localstack.kafka_broker import kafka_component
from deploy.localstack.processes import ProcessRecord, spawn, terminate
from deploy.settings import Settings
from tests.services import free_tcp_port

_READY_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 30.0


class PrivateKafka:
    """`start()` / `stop()` as often as needed (the data survives); stopped on leaving the `async with`."""

    def __init__(self, base: Settings, state_dir: Path) -> None:
        port = free_tcp_port()
        stack = base.stack.model_copy(
            update={"kafka_port": port, "kafka_controller_port": free_tcp_port(), "kafka_heap": "256m"}
        )
        # Short client timeouts: the tests talk to this broker while it is down, on purpose.
        self.config = KafkaConfig(
            bootstrap_servers=f"{stack.host}:{port}", connect_timeout_s=10, request_timeout_s=5, publish_timeout_s=10
        )
        self.settings = base.model_copy(update={"state_dir": state_dir, "stack": stack, "kafka": self.config})
        self._component = kafka_component(self.settings)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self._component.log_file

    async def start(self) -> None:
        assert self._process is None, "already started"
        await self._component.prepare()
        process = spawn(self._component.argv, log_file=self._component.log_file, cwd=self._component.data_dir)
        self._process = process
        try:
            await wait_ready(self._component, lambda: _ended(process), _READY_TIMEOUT_S)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        await terminate(ProcessRecord(process.pid, self._component.argv, [self._component.port]), _STOP_TIMEOUT_S)
        await asyncio.to_thread(process.wait, _STOP_TIMEOUT_S)  # reap it: we are its parent

    async def __aenter__(self) -> PrivateKafka:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _ended(process: subprocess.Popen[bytes]) -> str | None:
    code = process.poll()
    return None if code is None else f"exit code {code}"


async def all_records(config: KafkaConfig, topic: str, *, expected: int, timeout_s: float = 30.0,
                      quiet_s: float = 2.0) -> list[ConsumerRecord]:  # fmt: skip
    """Every record of `topic` from its beginning: at least `expected` of them (or fail after `timeout_s`), then
    whatever else arrives until nothing has for `quiet_s`."""
    (count,) = (await partition_counts(config, [topic])).values()
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer = AIOKafkaConsumer(bootstrap_servers=config.bootstrap_servers, enable_auto_commit=False,
                                isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while len(records) < expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(records)} records in {topic} after {timeout_s} s, expected {expected}")
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        while batches := await consumer.getmany(timeout_ms=int(quiet_s * 1000)):
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records
