"""`opswarm storm` as a user runs it, in the test session's Kafka namespace: the breakdown and the exact last line,
exit 1 with the reason when alerts are lost, 2 on bad arguments, one line (no traceback) when nothing answers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bus.config import KafkaConfig
from tests.integration.opswarm_cli import run_opswarm
from tests.integration.storm_support import BRIDGE_TOKEN, StandInTriage, serving_bridge
from tests.services import free_tcp_port

pytestmark = pytest.mark.integration
LAST_LINE = re.compile(r"^storm: sent=(\d+) accounted=(\d+) lost=(\d+) alerts_per_s=(\d+) p50_ms=(\d+) p99_ms=(\d+) "
                       r"incidents=(\d+)$")  # fmt: skip


def storm_env(kafka: KafkaConfig, state_dir: Path, **more: str) -> dict[str, str]:
    return {
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "OPSWARM_KAFKA__TOPIC_NAMESPACE": kafka.topic_namespace,
        "OPSWARM_STATE_DIR": str(state_dir),
        "OPSWARM_BRIDGE__TOKEN": BRIDGE_TOKEN,
        **more,
    }


@pytest.mark.parametrize("via", ["kafka", "bridge"])
async def test_a_storm_ends_with_its_breakdown_and_line(kafka_config: KafkaConfig, tmp_path: Path, via: str) -> None:
    async with serving_bridge(kafka_config) as url, StandInTriage(kafka_config) as triage:
        stop = asyncio.Event()
        triaging = asyncio.create_task(triage.run(stop))
        try:
            result = await run_opswarm(
                "storm", "--via", via, "--alerts", "2000", "--rate", "4000", "--services", "20", "--groups", "4",
                "--bridge-url", url, "--drain-timeout", "20", env=storm_env(kafka_config, tmp_path), timeout_s=120,
            )  # fmt: skip
        finally:
            stop.set()
            await asyncio.wait_for(triaging, 30)
    assert result.returncode == 0, result.describe()
    match = LAST_LINE.match(result.last_line)
    assert match, result.describe()
    sent, accounted, lost, per_s, p50, p99, incidents = (int(v) for v in match.groups())
    assert (sent, accounted, lost, incidents) == (2000, 2000, 0, 4) and per_s > 0 and p99 >= p50
    for word in ("opened=", "merged=", "duplicate=", "suppressed=", "doubled", "surplus"):
        assert word in result.stdout
    plots = list((tmp_path / "storm").glob("*.png"))
    assert len(plots) == 1 and str(plots[0]) in result.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    assert "Traceback" not in result.stderr


async def test_lost_alerts_exit_1_and_say_why(kafka_config: KafkaConfig, tmp_path: Path) -> None:
    result = await run_opswarm("storm", "--via", "kafka", "--alerts", "300", "--drain-timeout", "1",
                               env=storm_env(kafka_config, tmp_path))  # fmt: skip  # nobody triages
    assert result.returncode == 1, result.describe()
    assert LAST_LINE.match(result.last_line) and " lost=300 " in result.last_line
    assert "storm: failed: 300 alerts sent were never accounted" in result.stderr


@pytest.mark.parametrize(
    "args,problem",
    [
        (["--duration", "5", "--alerts", "10"], "not both"),
        (["--via", "pigeon"], "--via"),
        (["--rate", "-3"], "--rate"),
        (["--services", "2", "--groups", "3"], "at least groups"),
        (["--alerts", "ten"], "Usage: opswarm storm"),  # typer's own check
    ],
)
async def test_bad_arguments_exit_2(kafka_config: KafkaConfig, tmp_path: Path, args: list[str], problem: str) -> None:
    result = await run_opswarm("storm", *args, env=storm_env(kafka_config, tmp_path))
    assert result.returncode == 2, result.describe()
    assert problem in result.stderr and "Traceback" not in result.stderr


async def test_nothing_answering_is_one_line_and_exit_1(kafka_config: KafkaConfig, tmp_path: Path) -> None:
    no_bridge = await run_opswarm("storm", "--alerts", "10", "--bridge-url", f"http://127.0.0.1:{free_tcp_port()}",
                                  env=storm_env(kafka_config, tmp_path))  # fmt: skip
    no_kafka = await run_opswarm("storm", "--alerts", "10", "--via", "kafka", env=storm_env(
        kafka_config, tmp_path, OPSWARM_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_tcp_port()}",
        OPSWARM_KAFKA__CONNECT_TIMEOUT_S="3", OPSWARM_KAFKA__REQUEST_TIMEOUT_S="3",
    ))  # fmt: skip
    for result, reason in ((no_bridge, "storm: cannot reach the bridge at"), (no_kafka, "storm: cannot reach Kafka")):
        assert result.returncode == 1, result.describe()
        assert reason in result.stderr and "Traceback" not in result.stderr, result.describe()
        assert [line for line in result.stderr.splitlines() if line.startswith("storm: ")] == [
            next(line for line in result.stderr.splitlines() if reason in line)
        ]
