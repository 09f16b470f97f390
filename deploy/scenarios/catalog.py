"""The scenarios: each breaks a real target process in one way and says what the swarm should end with.

Every scenario deploys its own target service (a unique name per run, so rate limits, breakers and incidents of
one run never touch another), has Prometheus scrape it, injects its fault, fires the alert once Prometheus sees
the fault, and follows the incident to its end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from deploy.scenarios.scenario_run import ScenarioRun
from knowledge.incident_store import IncidentRecord

VERIFY_WINDOW_S = "5"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    expected_state: str
    play: Callable[[ScenarioRun], Awaitable[list[IncidentRecord]]]
    # Whether it waits for a human's approval (answered as `--approve-via` says).
    asks_approval: bool = False


async def service_down(run: ScenarioRun) -> list[IncidentRecord]:
    t = run.target
    await run.target.fault("crash")
    run.fault_injected()
    run.say(f"fault injected: {t.process} crashed")
    await run.condition(f'up{{service="{t.service}"}} == 0', "the target's scrape fails")
    await run.fire("ServiceDown", "critical", {"verify_window_s": VERIFY_WINDOW_S}, f"{t.service} is down")
    incident = await run.incident_opened("ServiceDown")
    record = await run.settled(incident)
    await run.resolve_alerts()
    return [record]


async def disk_full(run: ScenarioRun) -> list[IncidentRecord]:
    t = run.target
    old, fresh, size = 8, 2, 1 << 20
    threshold = (fresh + 1) * size
    await t.fault("disk_fill", {"files": old, "size_bytes": size, "age_s": 7200, "fresh_files": fresh})
    run.fault_injected()
    run.say(f"fault injected: {old} old and {fresh} fresh files of {size} bytes in {t.data_dir}")
    await run.condition(f'demo_disk_used_bytes{{service="{t.service}"}} > {threshold}', "the disk fills")
    labels = {"path": str(t.data_dir), "min_age_s": "3600", "threshold_bytes": str(threshold),
              "verify_window_s": VERIFY_WINDOW_S}  # fmt: skip
    await run.fire("DiskFull", "warning", labels, f"{t.service}'s disk is above {threshold} bytes")
    incident = await run.incident_opened("DiskFull")
    record = await run.settled(incident)
    left = sorted(p.name for p in t.data_dir.iterdir())
    run.say(f"left in {t.data_dir}: {len(left)} file(s) — the fresh ones are kept")
    await run.resolve_alerts()
    return [record]


async def deploy_bad_release(run: ScenarioRun) -> None:
    """Once traffic flows: announce (ChangeRecorded) and deploy v2-bad, a release that serves errors."""
    t = run.target
    await run.condition(f'sum(rate(demo_requests_total{{service="{t.service}"}}[5s])) > 0', "traffic is flowing")
    await run.record_deploy("v2-bad", "v1")
    await t.deploy("v2-bad")
    run.fault_injected()
    run.say(f"fault injected: {t.service} deployed v2-bad (serves errors)")


async def bad_deploy(run: ScenarioRun) -> list[IncidentRecord]:
    t = run.target
    await deploy_bad_release(run)
    ratio = (
        f'sum(rate(demo_request_errors_total{{service="{t.service}"}}[5s])) / '
        f'sum(rate(demo_requests_total{{service="{t.service}"}}[5s]))'
    )
    await run.condition(f"{ratio} > 0.5", "the error ratio rises")
    await run.fire("HighErrorRate", "critical", {"verify_window_s": VERIFY_WINDOW_S}, f"{t.service} serves errors")
    incident = await run.incident_opened("HighErrorRate")
    await run.approve_when_asked(incident)
    record = await run.settled(incident)
    await run.resolve_alerts()
    return [record]


async def db_corruption(run: ScenarioRun) -> list[IncidentRecord]:
    t = run.target
    await t.fault("data_corruption")
    run.fault_injected()
    run.say(f"fault injected: {t.service}'s data store reports corruption")
    await run.condition(f'demo_data_corruption{{service="{t.service}"}} > 0', "corruption is reported")
    await run.fire("DatabaseCorruption", "critical", {"db": f"{t.service}-db"}, f"{t.service}'s data is corrupt")
    incident = await run.incident_opened("DatabaseCorruption")
    record = await run.settled(incident)
    await run.resolve_alerts()
    return [record]


async def restart_storm(run: ScenarioRun) -> list[IncidentRecord]:
    t = run.target
    records = []
    # The same crash again and again; scrape-based and probe-based alerts take turns, as both fire on a crash.
    for cycle, alertname in enumerate(("ServiceDown", "TargetDown", "ServiceDown", "TargetDown"), start=1):
        await run.condition(f'up{{service="{t.service}"}} == 1', f"cycle {cycle}: the target is up")
        await t.fault("crash")
        run.fault_injected()
        run.say(f"cycle {cycle}: {t.process} crashed")
        await run.condition(f'up{{service="{t.service}"}} == 0', "the target's scrape fails")
        await run.fire(alertname, "critical", {"verify_window_s": VERIFY_WINDOW_S}, f"{t.service} is down")
        incident = await run.incident_opened(alertname)
        record = await run.settled(incident)
        records.append(record)
        await run.resolve_alerts()
        if record.state.value != "CLOSED":
            break
    return records


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("service-down", "the target crashes; restarted automatically and verified", "CLOSED", service_down),
        Scenario("disk-full", "old files fill the disk; cleaned inside the allowlist only, verified", "CLOSED",
                 disk_full),
        Scenario("bad-deploy", "errors right after a deploy; rollback approved on the CLI, verified", "CLOSED",
                 bad_deploy, asks_approval=True),
        Scenario("db-corruption", "data corruption; failover/deletion are FORBIDDEN: escalated, nothing run",
                 "PARKED", db_corruption),
        Scenario("restart-storm", "the target keeps crashing; the 4th restart within the hour is refused", "PARKED",
                 restart_storm),
    )
}  # fmt: skip
