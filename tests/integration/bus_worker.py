"""A consumer process for bus tests: handles IncidentUpdated events from a topic and answers each with one.

Run as `python -m tests.integration.bus_worker ...`. It writes `started-<event_id>` and `done-<event_id>` marker
files so a test can tell where it is. With `--crash-on REASON` it stops inside the handler of the event whose
reason is REASON, after the outputs of earlier events of the batch were produced, and waits to be killed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from bus.config import KafkaConfig
from bus.consumer import Delivery, EventConsumer, RecordContext
from bus.events import AnyEvent, IncidentUpdated
from bus.lifecycle import stop_on_signals


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--topic-namespace", default="", help="where the worker's outputs go (KafkaConfig's)")
    parser.add_argument("--group", required=True)
    parser.add_argument("--delivery", choices=[d.value for d in Delivery], required=True)
    parser.add_argument("--transactional-id")
    parser.add_argument("--markers", type=Path, required=True)
    parser.add_argument("--crash-on")
    parser.add_argument("--work-s", type=float, default=0.0, help="simulated work per event")
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    args.markers.mkdir(parents=True, exist_ok=True)

    async def handle(event: AnyEvent, ctx: RecordContext) -> list[IncidentUpdated]:
        assert isinstance(event, IncidentUpdated)
        (args.markers / f"started-{event.event_id}").touch()
        if args.crash_on and event.reason == args.crash_on:
            await asyncio.Event().wait()  # hold the transaction open until the test kills this process
        if args.work_s:
            await asyncio.sleep(args.work_s)  # simulated work, so a stop request arrives mid-handler
        (args.markers / f"done-{event.event_id}").touch()
        return [event.follow(IncidentUpdated, produced_by="bus-worker", reason=f"handled {event.event_id}")]

    consumer = EventConsumer(
        KafkaConfig(bootstrap_servers=args.bootstrap, topic_namespace=args.topic_namespace),
        name="bus-worker",
        group_id=args.group,
        topics=[args.topic],
        handler=handle,
        delivery=Delivery(args.delivery),
        transactional_id=args.transactional_id,
    )
    stop = asyncio.Event()
    stop_on_signals(stop)
    await consumer.run(stop)
    (args.markers / "exited-cleanly").touch()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
