"""`make bench-storm`: the standard storm (100,000 alerts over 2,000 services) through the bridge and straight to
Kafka, with the raw Kafka produce→consume ceiling for the same records measured in the same run.

On the running local stack, in a topic namespace and Redis prefix of its own (`bench-storm-<run>`), so the swarm's
own topics see nothing:

1. raw: the storm's AlertReceived records, encoded once, through plain aiokafka (producer acks=all, idempotent;
   a consumer committing per batch, read_committed) on a 6-partition topic: records consumed per second from the
   first send to the last record consumed, producer and consumer at once (bench_bus's raw path);
2. kafka: `opswarm storm --via kafka` against monitoring replicas started for the run;
3. bridge: the same storm (fresh names) posted to a bridge process started for the run, in Alertmanager batches.

Each storm is closed-loop: at most `--window` alerts sent and not yet accounted, as fast as the swarm accounts for
them; alerts_per_s is alerts accounted per second from the first send to the last outcome, p99 the latency of
alert sent → its outcome (the same transaction as its incident event) observed on Kafka. ratio_vs_raw is the
bridge's alerts_per_s over the raw ceiling. Last line:
`bench-storm: alerts=N via=bridge alerts_per_s=N p99_ms=N lost=0 ratio_vs_raw=R incidents=N`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
from redis.asyncio import Redis

from bus.admin import ensure_topics
from bus.bridge.alert_events import Receipt, alertmanager_events
from bus.codec import encode_event
from bus.config import KafkaConfig
from bus.lifecycle import tune_collector_for_throughput
from bus.topics import ALERTS, TopicSpec
from deploy.bench_bus import RawPath, run_pass
from deploy.localstack.component import http_ready_probe
from deploy.localstack.processes import spawn, this_python
from deploy.scenarios.targets import free_port
from deploy.settings import CHECKOUT_DIR, Settings
from deploy.storm.alert_mix import AlertMix, MixConfig
from deploy.storm.storm_run import StormConfig, StormReport, run_storm
from scheduler.heartbeats import HeartbeatRegistry

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def storm_records(alerts: int, services: int, groups: int) -> tuple[list[bytes], list[bytes]]:
    """The values and keys of a storm's AlertReceived records, as the bridge would make them."""
    config = MixConfig(services=services, groups=groups, seed=1, run_id="raw")
    mix = AlertMix(config, started_at_us=time.time_ns() // 1000)
    values: list[bytes] = []
    keys: list[bytes] = []
    while len(values) < alerts:
        batch = mix.next_batch(min(500, alerts - len(values)))
        for event in alertmanager_events(orjson.loads(batch.body), Receipt.now()):
            values.append(encode_event(event))
            keys.append(event.service.encode())
    return values, keys


async def raw_ceiling(kafka: KafkaConfig, values: list[bytes], keys: list[bytes]) -> float:
    spec = TopicSpec("opswarm.bench-storm-raw.v1", ALERTS.partitions, 3600 * 1000)
    await ensure_topics(kafka, [spec])
    result = await run_pass(RawPath(kafka, kafka.topic(spec), values, keys), len(values), None)
    return result.eps


class SwarmUnderTest:
    """Monitoring replicas and a bridge, started for the run in its namespace; stopped (SIGTERM) at the end."""

    def __init__(self, settings: Settings, kafka: KafkaConfig, prefix: str, replicas: int, logs: Path) -> None:
        self._settings, self._kafka, self._prefix, self._replicas, self._logs = settings, kafka, prefix, replicas, logs
        self.token = secrets.token_urlsafe(24)
        self.bridge_port = free_port("127.0.0.1")
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def bridge_url(self) -> str:
        return f"http://127.0.0.1:{self.bridge_port}"

    async def start(self) -> None:
        assert self._settings.redis_url is not None
        common = {
            "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": self._kafka.bootstrap_servers,
            "OPSWARM_KAFKA__TOPIC_NAMESPACE": self._kafka.topic_namespace,
            "OPSWARM_LOG_LEVEL": "WARNING",
        }
        monitoring = {
            **common, "OPSWARM_REDIS_URL": self._settings.redis_url.get_secret_value(),
            "OPSWARM_REDIS_PREFIX": self._prefix, "OPSWARM_CONSUMER_GROUP": f"{self._prefix}-monitoring",
            "OPSWARM_HTTP_PORT": "0",
        }  # fmt: skip
        names = [f"{self._prefix}-monitoring-{k}" for k in range(self._replicas)]
        for name in names:
            self._spawn(name, "agents.monitoring", {**monitoring, "OPSWARM_INSTANCE_ID": name})
        self._spawn("bridge", "bus.bridge", {**common, "OPSWARM_BRIDGE__PORT": str(self.bridge_port),
                                             "OPSWARM_BRIDGE__TOKEN": self.token})  # fmt: skip
        redis = Redis.from_url(self._settings.redis_url.get_secret_value())
        try:
            await _until(lambda: _beating(HeartbeatRegistry(redis, self._prefix), names), "monitoring replicas beating")
        finally:
            await redis.aclose()
        await _until(_answers(http_ready_probe(f"{self.bridge_url}/readyz")), "the bridge ready")

    async def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)

    def _spawn(self, name: str, module: str, env: dict[str, str]) -> None:
        argv = [this_python(), "-m", module]
        self._processes.append(spawn(argv, log_file=self._logs / f"{name}.log", cwd=CHECKOUT_DIR, env=env))


async def bench(args: argparse.Namespace) -> str:
    settings = Settings()
    run = secrets.token_hex(3)
    prefix = f"bench-storm-{run}"
    kafka = settings.kafka.model_copy(update={"topic_namespace": prefix})
    await ensure_topics(kafka)
    print(f"bench-storm {run}: {args.alerts:,} alerts over {args.services:,} services in {args.groups} groups, "
          f"{args.replicas} monitoring replica(s), window {args.window:,}", flush=True)  # fmt: skip
    values, keys = storm_records(args.alerts, args.services, args.groups)
    raw = await raw_ceiling(kafka, values, keys)
    print(f"raw: {len(values)} records produce→consume, {raw:,.0f} records/s", flush=True)
    swarm = SwarmUnderTest(settings, kafka, prefix, args.replicas, settings.state_dir / "bench-storm" / run)
    reports: dict[str, StormReport] = {}
    try:
        await swarm.start()
        for via in ("kafka", "bridge"):
            config = StormConfig(
                rate=0, alerts=args.alerts, services=args.services, groups=args.groups, via=via,  # type: ignore[arg-type]
                batch=args.batch, concurrency=args.concurrency, window=args.window, seed=args.seed,
                run_id=f"{run}{via[0]}", plot_path=settings.state_dir / "bench-storm" / run / f"{via}.png",
            )  # fmt: skip
            report = await run_storm(config, kafka, swarm.bridge_url, swarm.token)
            reports[via] = report
            print(f"{report.line()} via={via} plot={config.plot_path}", flush=True)
    finally:
        await swarm.stop()
    for via, report in reports.items():
        if report.problems():
            print(f"bench-storm: via={via} problems: {'; '.join(report.problems())}", flush=True)
    lines = [_line(args.alerts, via, report, raw) for via, report in reports.items()]
    return "\n".join(lines)


def _line(alerts: int, via: str, report: StormReport, raw: float) -> str:
    t = report.totals
    return (f"bench-storm: alerts={alerts} via={via} alerts_per_s={round(report.alerts_per_s)} "
            f"p99_ms={round(t.p99_ms or 0)} lost={t.lost} ratio_vs_raw={report.alerts_per_s / raw:.2f} "
            f"incidents={t.incidents}")  # fmt: skip


async def _beating(heartbeats: HeartbeatRegistry, names: list[str]) -> bool:
    live = {record.instance_id for record in await heartbeats.live()}
    return all(name in live for name in names)


def _answers(probe: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[bool]]:
    """A readiness probe (raises unless ready) as a condition."""

    async def ready() -> bool:
        try:
            await probe()
        except httpx.HTTPError:
            return False
        return True

    return ready


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {STARTUP_TIMEOUT_S:g} s")
        await asyncio.sleep(0.2)  # polling a condition with a deadline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--services", type=int, default=2_000)
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--replicas", type=int, default=2, help="monitoring replicas in one consumer group")
    parser.add_argument("--window", type=int, default=10_000, help="alerts sent and not yet accounted, at most")
    parser.add_argument("--batch", type=int, default=500, help="alerts per webhook body / Kafka batch")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_collector_for_throughput()
    lines = asyncio.run(bench(args))
    print(lines)
    last = lines.splitlines()[-1]
    sys.exit(0 if " lost=0 " in last else 1)


if __name__ == "__main__":
    main()
