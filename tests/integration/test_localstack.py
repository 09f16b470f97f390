"""The local stack's `up`, `status` and `down`: idempotent, honest about ports, and leaving nothing behind."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from bus.config import KafkaConfig
from bus.topics import ALERTS
from deploy import localstack
from deploy.localstack import procfs
from deploy.localstack.bridge_token import read_token
from deploy.settings import Settings
from tests.integration.kafka_reading import TopicReader
from tests.integration.opswarm_cli import run_opswarm
from tests.services import ServiceEndpoints, free_tcp_port

pytestmark = pytest.mark.integration

COMPONENTS = ["kafka", "redis", "ferretdb", "bridge", "alertmanager", "prometheus"]
# The setting that moves each component's (first) port.
PORT_SETTINGS = [
    "OPSWARM_STACK__KAFKA_PORT",
    "OPSWARM_STACK__REDIS_PORT",
    "OPSWARM_STACK__MONGO_PORT",
    "OPSWARM_BRIDGE__PORT",
    "OPSWARM_STACK__ALERTMANAGER_PORT",
    "OPSWARM_STACK__PROMETHEUS_PORT",
]


async def test_up_twice_changes_nothing(settings: Settings, services: ServiceEndpoints) -> None:
    first = await localstack.up(settings)
    assert first.ok, first
    second = await localstack.up(settings)
    assert second.ok, second
    assert [(c.name, c.state) for c in second.components] == [(name, "already running") for name in COMPONENTS]
    assert [c.pid for c in second.components] == [c.pid for c in first.components]
    assert second.topics is not None and second.topics.created == []


async def test_status_reports_each_component_running(settings: Settings, services: ServiceEndpoints) -> None:
    started = {c.name: c.pid for c in (await localstack.up(settings)).components}
    reports = localstack.status(settings)
    assert [r.name for r in reports] == COMPONENTS
    for report in reports:
        assert report.state == "running", report
        assert report.pid == started[report.name]
        assert report.uptime_s is not None and report.uptime_s >= 0
    result = await run_opswarm("status", "--check")
    assert result.returncode == 0, result.describe()
    assert str(started["kafka"]) in result.stdout


async def test_up_refuses_a_running_component_with_other_settings(
    settings: Settings, services: ServiceEndpoints
) -> None:
    before = {c.name: c.pid for c in (await localstack.up(settings)).components}
    moved = settings.model_copy(update={"stack": settings.stack.model_copy(update={"redis_port": free_tcp_port()})})
    report = await localstack.up(moved)
    redis = next(c for c in report.components if c.name == "redis")
    assert redis.state == "failed"
    assert "runs with other settings than the current ones; run `opswarm down` then `opswarm up`" in redis.detail
    assert {r.name: r.pid for r in localstack.status(settings)} == before


async def test_up_moves_the_bridge_to_another_topic_namespace_and_back(
    settings: Settings, services: ServiceEndpoints, kafka_config: KafkaConfig
) -> None:
    """The bridge follows the settings (a swarm in a namespace of its own gets Alertmanager's alerts); the other
    components are left alone."""
    before = {c.name: c.pid for c in (await localstack.up(settings)).components}
    kafka = settings.kafka.model_copy(update={"topic_namespace": kafka_config.topic_namespace})
    moved = settings.model_copy(update={"kafka": kafka})
    service = f"bridge-moved-{uuid.uuid4().hex[:8]}"
    labels = {"alertname": "ServiceDown", "service": service, "severity": "critical"}
    alert = {"status": "firing", "labels": labels, "startsAt": "2026-11-21T04:17:08Z", "fingerprint": "8a1b2c3d4e5f6071"}
    body = {"version": "4", "status": "firing", "alerts": [alert]}
    try:
        report = {c.name: c for c in (await localstack.up(moved)).components}
        assert (report["bridge"].state, report["bridge"].detail) == ("started", "restarted: its settings changed")
        assert report["bridge"].pid != before["bridge"]
        assert {n: c.pid for n, c in report.items() if n != "bridge"} == {n: p for n, p in before.items() if n != "bridge"}
        async with TopicReader(kafka_config, [kafka_config.topic(ALERTS)]) as reader:
            async with httpx.AsyncClient(base_url=settings.bridge_url(), timeout=10) as client:
                token = read_token(settings.state_dir)
                response = await client.post("/alertmanager", json=body, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            await reader.until(lambda records: any(service.encode() in r.value for r in records))
    finally:
        back = {c.name: c for c in (await localstack.up(settings)).components}
    assert (back["bridge"].state, back["bridge"].detail) == ("started", "restarted: its settings changed")
    again = {c.name: c for c in (await localstack.up(settings)).components}
    assert (again["bridge"].state, again["bridge"].pid) == ("already running", back["bridge"].pid)


async def test_stale_pid_file_is_ignored_and_removed(tmp_path: Path, settings: Settings) -> None:
    private = settings.model_copy(update={"state_dir": tmp_path})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # Our own pid, but not the command line the pid file claims: must be treated as not ours (never signalled).
    (run_dir / "redis.pid").write_text(f"{os.getpid()}\n")
    launch = {"argv": ["redis-server", str(tmp_path / "redis" / "redis.conf")], "ports": [16379]}
    (run_dir / "redis.launch.json").write_text(json.dumps(launch))

    redis_status = next(r for r in localstack.status(private) if r.name == "redis")
    assert (redis_status.state, redis_status.detail) == ("stopped", "stale pid file")
    redis_down = next(r for r in await localstack.down(private) if r.name == "redis")
    assert (redis_down.state, redis_down.detail) == ("not running", "stale pid file removed")
    assert not (run_dir / "redis.pid").exists()


async def test_up_names_the_busy_port_and_the_setting(tmp_path: Path, settings: Settings) -> None:
    with _listening_sockets(len(COMPONENTS)) as ports:
        env = _private_stack_env(tmp_path, **dict(zip(COMPONENTS, ports, strict=True)))
        result = await run_opswarm("up", env=env)
    assert result.returncode == 1, result.describe()
    for port, setting in zip(ports, PORT_SETTINGS, strict=True):
        assert f"port {port} is in use by another process (pid {os.getpid()}" in result.stderr, result.describe()
        assert f"set {setting}" in result.stderr
    private = settings.model_copy(update={"state_dir": tmp_path})
    assert [r.state for r in localstack.status(private)] == ["stopped"] * len(COMPONENTS)
    assert not list((tmp_path / "run").glob("*.pid"))


async def test_down_leaves_no_process_behind(tmp_path: Path) -> None:
    env = _private_stack_env(tmp_path, **{name: free_tcp_port() for name in COMPONENTS})
    try:
        up = await run_opswarm("up", env=env, timeout_s=180)
        assert up.returncode == 0, up.describe()
        pids = {name: int((tmp_path / "run" / f"{name}.pid").read_text()) for name in COMPONENTS}
        assert all(procfs.is_alive(pid) for pid in pids.values()), pids
        again = await run_opswarm("up", env=env)
        assert again.returncode == 0, again.describe()
        assert again.stdout.count("already running") == len(COMPONENTS), again.describe()
    finally:
        down = await run_opswarm("down", env=env, timeout_s=90)
    assert down.returncode == 0, down.describe()
    # A zombie (exited, not yet reaped by init) is no process: procfs.is_alive says False for it.
    assert [name for name, pid in pids.items() if procfs.is_alive(pid)] == []
    # The bridge's argv names no path of the state dir: it is recognised by its pid above.
    assert _processes_mentioning(str(tmp_path)) == []
    assert not list((tmp_path / "run").glob("*"))


def _private_stack_env(
    state_dir: Path, *, kafka: int, redis: int, ferretdb: int, bridge: int, alertmanager: int, prometheus: int
) -> dict[str, str]:
    """Settings for a second, private stack instance in `state_dir`, on its own ports (clients pointed there too)."""
    return {
        "OPSWARM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
        "OPSWARM_REDIS_URL": f"redis://127.0.0.1:{redis}/0",
        "OPSWARM_MONGO_URL": f"mongodb://127.0.0.1:{ferretdb}/",
        "OPSWARM_QDRANT_PATH": str(state_dir / "qdrant"),
        "OPSWARM_STATE_DIR": str(state_dir),
        "OPSWARM_STACK__KAFKA_PORT": str(kafka),
        "OPSWARM_STACK__KAFKA_CONTROLLER_PORT": str(free_tcp_port()),
        "OPSWARM_STACK__REDIS_PORT": str(redis),
        "OPSWARM_STACK__MONGO_PORT": str(ferretdb),
        "OPSWARM_STACK__PROMETHEUS_PORT": str(prometheus),
        "OPSWARM_STACK__ALERTMANAGER_PORT": str(alertmanager),
        "OPSWARM_BRIDGE__PORT": str(bridge),
    }


@contextmanager
def _listening_sockets(count: int) -> Iterator[list[int]]:
    """`count` sockets listening on 127.0.0.1 in this process, closed on exit; yields their ports."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            ports.append(sock.getsockname()[1])
        yield ports


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = procfs.cmdline(int(entry.name))
            if argv and any(text in arg for arg in argv):
                found.append(procfs.describe(int(entry.name)))
    return found
