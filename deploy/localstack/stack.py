"""`up`, `down` and `status` of the local stack: Kafka, Redis, FerretDB, the alert bridge, Alertmanager and
Prometheus as detached processes of our own.

Layout under the state directory: `<component>/` data and generated config, `logs/<component>.log` output,
`run/<component>.pid` (+ `.launch.json`) bookkeeping. All three are idempotent; `down` only ever signals a
process whose command line is exactly the one we launched.

Components start concurrently, except that one waits for those it names in `after` to be ready (the bridge for
Kafka) and is not started when one of them failed; `down` stops it before them. Alertmanager and Prometheus need
nobody: they retry a receiver that is not there yet. A Prometheus that was already running gets the current config
and rule file (reloaded if they changed); a running component that follows its settings (the bridge: its topic
namespace) is restarted when they changed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from bus.admin import TopicsReport, ensure_topics
from deploy.localstack import procfs
from deploy.localstack.alertmanager_server import alertmanager_component
from deploy.localstack.bridge_server import bridge_component
from deploy.localstack.component import Component, ComponentError, wait_ready
from deploy.localstack.ferretdb_server import ferretdb_component
from deploy.localstack.kafka_broker import kafka_component
from deploy.localstack.processes import ProcessRecord, RunDir, env_digest, port_in_use, spawn, terminate
from deploy.localstack.prometheus_server import prometheus_component, sync_config
from deploy.localstack.redis_server import redis_component
from deploy.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComponentReport:
    """What happened to (or the state of) one component.

    state is one of: up: "started", "already running", "failed"; down: "stopped", "killed", "not running";
    status: "running", "stopped".
    """

    name: str
    state: str
    port: int
    pid: int | None = None
    detail: str = ""
    uptime_s: float | None = None


@dataclass(frozen=True)
class UpReport:
    components: list[ComponentReport]
    topics: TopicsReport | None = None
    topics_error: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.state != "failed" for c in self.components) and self.topics_error is None


def stack_components(settings: Settings) -> list[Component]:
    """Every component, in the order they are reported (and, where `after` says so, started)."""
    return [
        kafka_component(settings),
        redis_component(settings),
        ferretdb_component(settings),
        bridge_component(settings),
        alertmanager_component(settings),
        prometheus_component(settings),
    ]


def _run_dir(settings: Settings) -> RunDir:
    return RunDir(settings.state_dir / "run")


async def up(settings: Settings) -> UpReport:
    """Start whatever is not running, wait until every component answers; the topics are created or aligned as soon
    as Kafka answers, before the components that need Kafka start."""
    run_dir = _run_dir(settings)
    components = stack_components(settings)
    loop = asyncio.get_running_loop()
    started: dict[str, asyncio.Future[ComponentReport]] = {c.name: loop.create_future() for c in components}
    topics: list[TopicsReport] = []
    topics_errors: list[str] = []

    async def refusal(component: Component) -> str | None:
        """Why `component` is not started: a busy port (said at once, not after waiting for the components it
        needs) or a needed component that failed; None to go ahead."""
        if not component.after:
            return None
        busy = _busy_port(component, run_dir, settings)
        if busy is not None:
            return busy
        failed = [r.name for r in [await started[name] for name in component.after] if r.state == "failed"]
        return f"skipped: it needs {', '.join(failed)}, which failed" if failed else None

    async def bring_up(component: Component) -> ComponentReport:
        try:
            refused = await refusal(component)
            if refused is not None:
                report = ComponentReport(component.name, "failed", component.port, detail=refused)
            else:
                report = await _bring_up(component, run_dir, settings)
            if component.name == "kafka":
                if report.state == "failed":
                    topics_errors.append("Kafka is not running, topics not checked")
                else:
                    await _ensure_topics(settings, topics, topics_errors)
        except BaseException:
            started[component.name].cancel()
            raise
        started[component.name].set_result(report)
        return report

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(bring_up(c)) for c in components]
    reports = [await _synced(task.result(), settings) for task in tasks]
    return UpReport(reports, topics=next(iter(topics), None), topics_error=next(iter(topics_errors), None))


async def _ensure_topics(settings: Settings, topics: list[TopicsReport], errors: list[str]) -> None:
    try:
        topics.append(await ensure_bus_topics(settings))
    except Exception as exc:  # noqa: BLE001 - reported to the user, who decides
        log.exception("ensuring topics failed")
        errors.append(f"ensuring topics failed: {type(exc).__name__}: {exc}")


async def ensure_bus_topics(settings: Settings) -> TopicsReport:
    """Create or align the registry's topics on the configured Kafka (`opswarm up --topics-only`)."""
    return await ensure_topics(settings.kafka)


async def down(settings: Settings) -> list[ComponentReport]:
    """Stop every component our pid files name (SIGTERM, then SIGKILL after the stop timeout); a component named
    in another's `after` only once that one is down."""
    run_dir = _run_dir(settings)
    components = stack_components(settings)
    stopped: dict[str, asyncio.Event] = {c.name: asyncio.Event() for c in components}

    async def bring_down(component: Component) -> ComponentReport:
        for other in components:
            if component.name in other.after:
                await stopped[other.name].wait()
        try:
            return await _bring_down(component, run_dir, settings)
        finally:
            stopped[component.name].set()

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(bring_down(c)) for c in components]
    return [task.result() for task in tasks]


def status(settings: Settings) -> list[ComponentReport]:
    run_dir = _run_dir(settings)
    reports = []
    for component in stack_components(settings):
        record = run_dir.read(component.name)
        if record is not None and record.is_running():
            uptime = procfs.uptime_s(record.pid)
            reports.append(ComponentReport(component.name, "running", component.port, record.pid, uptime_s=uptime))
        else:
            detail = "stale pid file" if run_dir.has_files(component.name) else ""
            reports.append(ComponentReport(component.name, "stopped", component.port, detail=detail))
    return reports


async def _synced(report: ComponentReport, settings: Settings) -> ComponentReport:
    """A Prometheus that was already running: rewrite its config and rules, reload it if they changed."""
    if report.name != "prometheus" or report.state != "already running":
        return report
    try:
        if await sync_config(settings):
            return replace(report, detail="config reloaded")
    except Exception as exc:  # noqa: BLE001 - reported to the user, who decides
        log.exception("prometheus config sync failed")
        return replace(report, state="failed", detail=f"reloading the new config failed: {type(exc).__name__}: {exc}")
    return report


async def _bring_up(component: Component, run_dir: RunDir, settings: Settings) -> ComponentReport:
    try:
        return await _start(component, run_dir, settings)
    except ComponentError as exc:
        return ComponentReport(component.name, "failed", component.port, detail=str(exc))
    except Exception as exc:  # noqa: BLE001 - one component's surprise must not hide the others' reports
        log.exception("component start failed", extra={"component": component.name})
        return ComponentReport(component.name, "failed", component.port, detail=f"{type(exc).__name__}: {exc}")


async def _start(component: Component, run_dir: RunDir, settings: Settings) -> ComponentReport:
    timeout_s = settings.stack.ready_timeout_s
    ports = [p.port for p in component.ports]
    record = run_dir.read(component.name)
    detail = ""
    if record is not None and record.is_running():
        if record.argv != component.argv or record.ports != ports:
            raise ComponentError(
                f"{component.name} (pid {record.pid}) runs with other settings than the current ones; "
                "run `opswarm down` then `opswarm up`"
            )
        if not await _env_changed(component, record):
            # Usually answers at once; waits when a concurrent `up` has just launched it.
            await wait_ready(component, record.ended, timeout_s)
            return ComponentReport(component.name, "already running", component.port, record.pid)
        await terminate(record, settings.stack.stop_timeout_s)
        run_dir.remove(component.name)
        detail = "restarted: its settings changed"
        log.info("component restarted for changed settings", extra={"component": component.name})
    elif run_dir.has_files(component.name):
        run_dir.remove(component.name)
        detail = "stale pid file removed"
        log.info("stale pid file removed", extra={"component": component.name})
    _check_ports_free(component, settings)
    await component.prepare()
    env = None if component.env is None else component.env()
    try:
        process = spawn(component.argv, log_file=component.log_file, cwd=component.data_dir, env=env)
    except FileNotFoundError as exc:
        raise ComponentError(f"cannot run {component.argv[0]!r} ({exc}): run `make setup`") from exc
    record = ProcessRecord(process.pid, component.argv, ports, env_digest(env))
    run_dir.write(component.name, record)
    try:
        await wait_ready(component, lambda: _exit_status(process.poll()), timeout_s)
    except BaseException:
        # Not ready (or interrupted): leave nothing half-started behind.
        await terminate(record, settings.stack.stop_timeout_s)
        process.poll()
        run_dir.remove(component.name)
        raise
    return ComponentReport(component.name, "started", component.port, process.pid, detail=detail)


async def _env_changed(component: Component, record: ProcessRecord) -> bool:
    """Whether a running component that follows its settings was launched with other `env` values."""
    if not component.restart_on_env_change:
        return False
    await component.prepare()
    return env_digest(None if component.env is None else component.env()) != record.env_digest


def _exit_status(returncode: int | None) -> str | None:
    if returncode is None:
        return None
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"


def _busy_port(component: Component, run_dir: RunDir, settings: Settings) -> str | None:
    """Why `component` cannot start when one of its ports is taken (and it is not already running), else None."""
    record = run_dir.read(component.name)
    if record is not None and record.is_running():
        return None
    try:
        _check_ports_free(component, settings)
    except ComponentError as exc:
        return str(exc)
    return None


def _check_ports_free(component: Component, settings: Settings) -> None:
    for port in component.ports:
        if port_in_use(settings.stack.host, port.port):
            holders = procfs.listening_pids(port.port)
            who = f" ({'; '.join(procfs.describe(pid) for pid in holders)})" if holders else ""
            raise ComponentError(
                f"port {port.port} is in use by another process{who}; set {port.setting} to a free port"
            )


async def _bring_down(component: Component, run_dir: RunDir, settings: Settings) -> ComponentReport:
    record = run_dir.read(component.name)
    if record is None or not record.is_running():
        detail = "stale pid file removed" if run_dir.has_files(component.name) else ""
        run_dir.remove(component.name)
        return ComponentReport(component.name, "not running", component.port, detail=detail)
    outcome = await terminate(record, settings.stack.stop_timeout_s)
    run_dir.remove(component.name)
    log.info("component stopped", extra={"component": component.name, "pid": record.pid, "outcome": outcome})
    return ComponentReport(component.name, outcome, component.port, record.pid)
