"""The bus runtime across process deaths: kill -9 on the transactional path, restarts, SIGTERM."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from bus.codec import decode_event, encode_event
from bus.config import KafkaConfig
from bus.events import IncidentUpdated
from bus.topics import INCIDENTS
from tests.integration.kafka_reading import TopicReader, fresh_topic, produce_raw, wait_for_path
from tests.integration.worker_process import WorkerProcess

pytestmark = pytest.mark.integration


def _inputs(incident_id: str, reasons: list[str]) -> list[IncidentUpdated]:
    return [IncidentUpdated(produced_by="tests", incident_id=incident_id, reason=r) for r in reasons]


def _answers(records, incident_id: str) -> Counter:  # noqa: ANN001
    """How many answers the worker produced per input event, in what the reader saw."""
    counts: Counter = Counter()
    for record in records:
        event = decode_event(record.value)
        if event.incident_id == incident_id and event.produced_by == "bus-worker":
            counts[event.causation_id] += 1
    return counts


async def test_kill_after_produce_before_commit_does_not_duplicate_on_the_transactional_path(
    kafka_config: KafkaConfig, tmp_path: Path
) -> None:
    incident_id = f"inc-{uuid.uuid4().hex[:8]}"
    topic = await fresh_topic(kafka_config, "eos-in")
    inputs = _inputs(incident_id, ["first", "crash", "third"])
    await produce_raw(kafka_config, topic, [(incident_id.encode(), encode_event(e)) for e in inputs])
    ids = [e.event_id for e in inputs]
    worker_args = dict(
        config=kafka_config, topic=topic, group=f"eos-{incident_id}", delivery="exactly-once",
        transactional_id=f"eos-{incident_id}",
    )  # fmt: skip

    async with (
        TopicReader(kafka_config, [kafka_config.topic(INCIDENTS)], isolation="read_uncommitted") as everything,
        TopicReader(kafka_config, [kafka_config.topic(INCIDENTS)], isolation="read_committed") as committed,
    ):
        doomed = WorkerProcess(markers=tmp_path / "run1", crash_on="crash", **worker_args)
        await wait_for_path(tmp_path / "run1" / f"started-{ids[1]}")
        # The answer to "first" is on the log, inside the still-open transaction: produced, not committed.
        await everything.until(lambda rs: _answers(rs, incident_id)[ids[0]] == 1)
        doomed.kill_hard()

        survivor = WorkerProcess(markers=tmp_path / "run2", **worker_args)
        await committed.until(lambda rs: set(_answers(rs, incident_id)) == set(ids))
        assert await survivor.terminate() == 0
        await committed.drain()
        await everything.until(lambda rs: sum(_answers(rs, incident_id).values()) >= 4)

    assert _answers(committed.records, incident_id) == Counter({i: 1 for i in ids})
    # read_uncommitted also sees the aborted answer of the killed process: proof the kill came after producing.
    assert _answers(everything.records, incident_id)[ids[0]] == 2
    # The restarted process handled "first" again, since its offset was never committed.
    assert (tmp_path / "run2" / f"done-{ids[0]}").exists()


async def test_restarted_consumer_resumes_from_its_committed_offset(kafka_config: KafkaConfig, tmp_path: Path) -> None:
    incident_id = f"inc-{uuid.uuid4().hex[:8]}"
    topic = await fresh_topic(kafka_config, "resume", partitions=3)
    group = f"resume-{incident_id}"
    worker_args = dict(config=kafka_config, topic=topic, group=group, delivery="at-least-once")
    before = _inputs(incident_id, [f"before-{i}" for i in range(5)])
    after = _inputs(incident_id, [f"after-{i}" for i in range(5)])

    async with TopicReader(kafka_config, [kafka_config.topic(INCIDENTS)]) as reader:
        await produce_raw(kafka_config, topic, [(f"k{i}".encode(), encode_event(e)) for i, e in enumerate(before)])
        first = WorkerProcess(markers=tmp_path / "run1", **worker_args)
        await reader.until(lambda rs: len(_answers(rs, incident_id)) == 5)
        assert await first.terminate() == 0

        await produce_raw(kafka_config, topic, [(f"k{i}".encode(), encode_event(e)) for i, e in enumerate(after)])
        second = WorkerProcess(markers=tmp_path / "run2", **worker_args)
        await reader.until(lambda rs: len(_answers(rs, incident_id)) == 10)
        assert await second.terminate() == 0
        await reader.drain()

    answers = _answers(reader.records, incident_id)
    assert answers == Counter({e.event_id: 1 for e in before + after})
    handled_by_second = {p.name.removeprefix("done-") for p in (tmp_path / "run2").glob("done-*")}
    assert handled_by_second == {e.event_id for e in after}


async def test_sigterm_finishes_the_event_in_hand_and_commits_it(kafka_config: KafkaConfig, tmp_path: Path) -> None:
    incident_id = f"inc-{uuid.uuid4().hex[:8]}"
    topic = await fresh_topic(kafka_config, "sigterm")
    group = f"sigterm-{incident_id}"
    inputs = _inputs(incident_id, ["a", "b", "c"])
    await produce_raw(kafka_config, topic, [(b"k", encode_event(e)) for e in inputs])
    worker_args = dict(config=kafka_config, topic=topic, group=group, delivery="at-least-once")

    async with TopicReader(kafka_config, [kafka_config.topic(INCIDENTS)]) as reader:
        slow = WorkerProcess(markers=tmp_path / "run1", work_s="1.0", **worker_args)
        await wait_for_path(tmp_path / "run1" / f"started-{inputs[0].event_id}")
        assert await slow.terminate() == 0
        assert (tmp_path / "run1" / "exited-cleanly").exists()
        assert (tmp_path / "run1" / f"done-{inputs[0].event_id}").exists()
        assert not (tmp_path / "run1" / f"started-{inputs[1].event_id}").exists()

        rest = WorkerProcess(markers=tmp_path / "run2", **worker_args)
        await reader.until(lambda rs: len(_answers(rs, incident_id)) == 3)
        assert await rest.terminate() == 0
        await reader.drain()

    assert _answers(reader.records, incident_id) == Counter({e.event_id: 1 for e in inputs})
    assert not (tmp_path / "run2" / f"started-{inputs[0].event_id}").exists()
