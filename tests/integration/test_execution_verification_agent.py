"""The execution agent's verification on the real stack, against a real Prometheus (scrape interval 1 s) scraping a
real target: a fix that holds passes; one that does not is rolled back, once, even when its timer fires again."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from agents.execution.service import verification_timers
from agents.execution.verification_loop import verification_event_id
from bus.config import KafkaConfig
from bus.events import ActionApproved, VerifySpec
from bus.producer import EventPublisher
from bus.topics import ACTIONS
from execution.adapters.process_supervisor import ProcessSupervisor
from scheduler.idempotency import IdempotencyStore
from scheduler.timers import DurableTimers
from tests.integration.execution_agent_support import (
    RESTART_WEB,
    agent_settings,
    answers_to,
    approval,
    publish_and_read,
    running,
    starts,
    web,  # noqa: F401 - a fixture
)
from tests.integration.execution_support import python_argv, wait_until
from tests.integration.kafka_reading import TopicReader
from tests.integration.prometheus_process import prometheus_scraping
from tests.integration.redis_keys import eventually

pytestmark = pytest.mark.integration

METRIC = "opswarm_test_error_ratio"
VERDICTS = ("verification.passed", "verification.failed")
# A scrape target serving one gauge at 0.01; it prints the port it listens on.
METRICS_TARGET = f"""
import http.server
BODY = b"# TYPE {METRIC} gauge\\n{METRIC} 0.01\\n"
class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real Prometheus, once it has scraped METRIC from its real target."""
    target = subprocess.Popen(python_argv(METRICS_TARGET), stdout=subprocess.PIPE)
    try:
        assert target.stdout is not None
        port = int(target.stdout.readline())
        with prometheus_scraping(tmp_path_factory.mktemp("prometheus"), port, METRIC, job="opswarm-test-target") as url:
            yield url
    finally:
        target.terminate()
        target.wait(10)


def _spec(query: str, threshold: float) -> VerifySpec:
    return VerifySpec(query=query, comparator="<", threshold=threshold, window_s=0.5)


def _timer_payload(approved: ActionApproved) -> dict:
    return {"approval": approved.model_dump(mode="json")}


async def _no_timers(timers: DurableTimers) -> bool:
    return await timers.pending() == 0


async def test_a_fix_that_holds_passes_verification(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path,  # noqa: ANN001
    web: ProcessSupervisor, prometheus: str,  # noqa: F811
) -> None:
    spec = _spec(f'max({METRIC}{{job="opswarm-test-target"}})', 0.05)
    approved = approval(RESTART_WEB, verify=spec, rollback=[RESTART_WEB])
    settings = agent_settings(services, kafka_config, key_prefix, tmp_path, prometheus)
    async with running(settings, redis_client):
        executed, passed = await publish_and_read(kafka_config, approved, "action.executed", *VERDICTS, count=2)
        await eventually(lambda: _no_timers(verification_timers(redis_client, settings)), 10)

    assert (executed.type, passed.type) == ("action.executed", "verification.passed")
    assert passed.observed == pytest.approx(0.01) and passed.verify == spec
    assert passed.event_id == verification_event_id(approved.action_id)
    assert passed.correlation_id == approved.correlation_id and passed.incident_id == approved.incident_id
    assert starts(web, "web") == 2  # the action, and no rollback


@pytest.mark.parametrize(
    ("query", "observed", "reason"),
    [
        (f"max({METRIC})", 0.01, "observed 0.01, expected < 0.001"),
        ("opswarm_test_metric_nobody_exports", None, "no data"),
    ],
)
async def test_a_fix_that_does_not_hold_is_rolled_back_once(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path,  # noqa: ANN001
    web: ProcessSupervisor, prometheus: str, query: str, observed: float | None, reason: str,  # noqa: F811
) -> None:
    approved = approval(RESTART_WEB, verify=_spec(query, 0.001), rollback=[RESTART_WEB])
    settings = agent_settings(services, kafka_config, key_prefix, tmp_path, prometheus)
    timers = verification_timers(redis_client, settings)
    async with running(settings, redis_client), TopicReader(kafka_config, [kafka_config.topic(ACTIONS)]) as reader:
        async with EventPublisher(kafka_config, client_id="tests") as publisher:
            await publisher.publish(approved)
        await reader.until(lambda rs: len(answers_to(rs, approved, *VERDICTS)) >= 1, 60)
        await eventually(lambda: _no_timers(timers), 10)
        await wait_until(lambda: starts(web, "web") == 3, what="web restarted by the action, then by the rollback")
        # The timer fires again (as after a crash between publishing and completing it): the recorded verdict is
        # published again, and the rollback does not run a second time.
        assert await timers.schedule(approved.action_id, time.time(), _timer_payload(approved))
        await reader.until(lambda rs: len(answers_to(rs, approved, *VERDICTS)) >= 2, 60)
        await eventually(lambda: _no_timers(timers), 10)
        await reader.drain()

    first, again = answers_to(reader.records, approved, *VERDICTS)
    assert first.type == "verification.failed" and first.rolled_back, first
    assert first.observed == (pytest.approx(observed) if observed is not None else None)
    assert first.reason.startswith(reason) and first.reason.endswith("rolled back (1 steps)")
    assert first.event_id == verification_event_id(approved.action_id) and again == first
    assert starts(web, "web") == 3


async def test_without_a_metrics_source_verification_fails_without_rollback(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path,  # noqa: ANN001
    web: ProcessSupervisor,  # noqa: F811
) -> None:
    approved = approval(RESTART_WEB, verify=_spec(f"max({METRIC})", 0.05), rollback=[RESTART_WEB])
    async with running(agent_settings(services, kafka_config, key_prefix, tmp_path), redis_client):
        _, failed = await publish_and_read(kafka_config, approved, "action.executed", *VERDICTS, count=2)

    assert failed.type == "verification.failed", failed
    assert (failed.reason, failed.rolled_back, failed.observed) == ("no metrics source configured", False, None)
    assert starts(web, "web") == 2


async def test_a_verification_interrupted_mid_way_is_not_run_again(
    services, kafka_config: KafkaConfig, redis_client: Redis, key_prefix: str, tmp_path: Path,  # noqa: ANN001
    web: ProcessSupervisor, prometheus: str,  # noqa: F811
) -> None:
    approved = approval(RESTART_WEB, verify=_spec("opswarm_test_metric_nobody_exports", 1), rollback=[RESTART_WEB])
    # An earlier worker claimed the verification (and perhaps ran the rollback), then crashed.
    claims = IdempotencyStore(redis_client, key_prefix)
    assert (await claims.claim(f"{approved.idempotency_key}:verification", "execution-9/0ddba11")).first
    async with running(agent_settings(services, kafka_config, key_prefix, tmp_path, prometheus), redis_client):
        _, failed = await publish_and_read(kafka_config, approved, "action.executed", *VERDICTS, count=2)

    assert failed.type == "verification.failed" and not failed.rolled_back, failed
    assert failed.reason.startswith("interrupted: an earlier attempt (execution-9/0ddba11)")
    assert failed.reason.endswith("rollback outcome unknown; not run twice")
    assert starts(web, "web") == 2  # the action only: the rollback is not run a second time
