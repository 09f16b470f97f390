"""One demo run: for each fault, a demo service of its own is deployed and scraped, the fault is injected, and the
run follows what the swarm does with the alert Alertmanager sends, until the incident ends."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from rich.console import Console

from bus.events import ActionExecuted, AlertReceived, DiagnosisCompleted, Event, IncidentOpened, VerificationPassed
from bus.producer import EventPublisher
from bus.topics import ACTIONS, ALERTS, DIAGNOSIS, ESCALATIONS, INCIDENTS
from deploy.demo.demo_faults import DemoFault
from deploy.demo.demo_report import FaultOutcome, outcome_of
from deploy.scenarios.scenario_run import ScenarioRun
from deploy.scenarios.swarm_watch import SwarmWatch
from deploy.scenarios.targets import ScenarioTarget, free_port
from deploy.settings import Settings
from knowledge.incident_store import IncidentStore

log = logging.getLogger(__name__)
WATCHED = (ALERTS, INCIDENTS, DIAGNOSIS, ACTIONS, ESCALATIONS)
_SCRAPE_WAIT_S = 30.0


async def run_fault(
    settings: Settings,
    fault: DemoFault,
    watch: SwarmWatch,
    publisher: EventPublisher,
    store: IncidentStore,
    console: Console,
    timeout_s: float,
    forbidden: frozenset[str],
) -> FaultOutcome:
    """Deploy a service, break it, follow its incident to the end; the outcome (never raises for a timeout)."""
    service = f"demo-{fault.name.split('-')[0]}-{uuid.uuid4().hex[:6]}"
    target = ScenarioTarget(settings, service, free_port(settings.stack.host), fires_own_alerts=False)
    run = ScenarioRun(fault.name, settings, target, watch, publisher, store, console, timeout_s)
    incident_id: str | None = None
    try:
        run.say(f"[bold]{fault.name}[/bold]: {fault.summary}")
        await target.deploy("v1")
        await target.scrape(_SCRAPE_WAIT_S)
        run.say(f"{service} v1 runs as {target.process} on {target.url}; Prometheus scrapes it")
        await fault.inject(run)
        incident_id = await _incident_opened(run, fault.alertnames)
        if fault.needs_approval:
            await run.approve_when_asked(incident_id)
        record = await run.settled(incident_id)
        runbook = _cited_runbook(run, watch.about(incident_id))
    except (TimeoutError, RuntimeError) as exc:
        run.say(f"[red]{fault.name} did not end: {exc}[/red]")
        return FaultOutcome(
            fault.name, service, incident_id, "TIMEOUT", "failed", fault.expected, 0, 0, False, None, None, str(exc)
        )
    finally:
        await target.remove()
    events = watch.about(incident_id)
    executed = [e for e in events if isinstance(e, ActionExecuted)]
    verified = any(isinstance(e, VerificationPassed) for e in events)
    state = record.state.value
    mttr = (run.settled_at - run.fault_at) if run.settled_at and run.fault_at else None
    return FaultOutcome(
        fault=fault.name, service=service, incident_id=incident_id, state=state,
        outcome=outcome_of(state, verified, sum(e.step.action in forbidden for e in executed)),
        expected=fault.expected, actions=len(executed), approvals=int(record.facts.get("approvals", 0)),
        verified=verified, mttr_s=mttr, swarm_share_s=_swarm_share(watch.events, service, executed), runbook=runbook,
    )  # fmt: skip


async def _incident_opened(run: ScenarioRun, alertnames: tuple[str, ...]) -> str:
    """The incident the swarm opens for the service on one of `alertnames` (sent by Alertmanager, not by us)."""

    def find(events: list[Event]) -> str | None:
        for event in events:
            if (
                isinstance(event, IncidentOpened)
                and event.service == run.target.service
                and any(a.alertname in alertnames for a in event.alerts)
            ):
                return event.incident_id
        return None

    run.say(f"waiting for Prometheus and Alertmanager: {' or '.join(alertnames)} on {run.target.service}")
    incident_id = await run.watch.wait_for(find, run.timeout_s, f"an incident for {' or '.join(alertnames)}")
    alert = next(
        (e for e in run.watch.events if isinstance(e, AlertReceived) and e.service == run.target.service), None
    )
    if alert is not None and run.fault_at is not None:
        fault_wall_time = time.time() - (time.monotonic() - run.fault_at)
        after = alert.occurred_at.timestamp() - fault_wall_time
        run.say(f"alert from {alert.source}: [bold]{alert.alertname}[/bold] ({alert.severity}), {after:.1f} s after")
    run.incidents.append(incident_id)
    run.say(f"incident opened: [bold]{incident_id}[/bold]")
    return incident_id


def _cited_runbook(run: ScenarioRun, events: list[Event]) -> str | None:
    """The runbook diagnosis cited first (from the knowledge base), said on the console; its file name."""
    diagnosis = next((e for e in events if isinstance(e, DiagnosisCompleted)), None)
    cited = [e for e in diagnosis.evidence if e.kind == "runbook" and e.source] if diagnosis else []
    if not cited:
        return None
    best = cited[0]
    title, section = str(best.data.get("title", "")), str(best.data.get("section", ""))
    where = section if section.startswith(title) else f"{title} › {section}".strip(" ›")
    score = f", score {best.score:.3f}" if best.score is not None else ""
    run.say(f"diagnosis cited the runbook [bold]{where}[/bold] ({Path(best.source or '').name}{score})")
    return Path(best.source or "").name


def _swarm_share(events: list[Event], service: str, executed: list[ActionExecuted]) -> float | None:
    """First AlertReceived of the service to the incident's first ActionExecuted, in seconds."""
    alerts = [e for e in events if isinstance(e, AlertReceived) and e.service == service and e.status == "firing"]
    if not alerts or not executed:
        return None
    return (min(e.occurred_at for e in executed) - min(e.occurred_at for e in alerts)).total_seconds()
