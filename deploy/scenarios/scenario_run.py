"""What every scenario does around its fault: fire alerts as Alertmanager would, follow the incidents the swarm
opens, answer an approval on the CLI when asked, and report.

Alerts are fired only once Prometheus sees the fault (the alert's condition holds), as an alerting rule would.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape

from bus.events import (
    ActionExecuted,
    AlertReceived,
    ChangeRecorded,
    EscalationRaised,
    Event,
    IncidentOpened,
    IncidentUpdated,
    Severity,
    VerificationPassed,
)
from bus.incident_states import IncidentState
from bus.producer import EventPublisher
from deploy.agents_cli import HTTP_PORTS
from deploy.operator_credentials import OPERATOR as OPERATOR_NAME
from deploy.operator_credentials import ensure_operator_credentials
from deploy.prometheus_targets import wait_for_series
from deploy.scenarios.swarm_watch import SwarmWatch
from deploy.scenarios.targets import ScenarioTarget
from deploy.scenarios.web_approval import approve_on_page
from deploy.settings import CHECKOUT_DIR, Settings
from knowledge.incident_store import IncidentRecord, IncidentStore

log = logging.getLogger(__name__)
SETTLED = frozenset({IncidentState.CLOSED, IncidentState.PARKED})
OPERATOR = "scenario-operator"


@dataclass
class ScenarioRun:
    name: str
    settings: Settings
    target: ScenarioTarget
    watch: SwarmWatch
    publisher: EventPublisher
    store: IncidentStore
    console: Console
    timeout_s: float
    # How the scenario answers an approval request: cli (`opswarm approve`), web (the approvals page), none.
    approve_via: str = "cli"
    incidents: list[str] = field(default_factory=list)
    fired: list[AlertReceived] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    fault_at: float | None = None
    settled_at: float | None = None

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:7.2f}s[/dim] {message}")

    def fault_injected(self) -> None:
        if self.fault_at is None:
            self.fault_at = time.monotonic()

    async def condition(self, query: str, what: str) -> None:
        """Wait until Prometheus sees the fault: `query` returns a sample."""
        self.say(f"waiting for Prometheus: {what} ([cyan]{query}[/cyan])")
        result = await wait_for_series(self.settings.prometheus_url(), query, self.timeout_s)
        self.say(f"Prometheus sees it: {query} = {result.value:g}")

    async def fire(self, alertname: str, severity: Severity, labels: dict[str, str], summary: str) -> AlertReceived:
        alert = AlertReceived(
            produced_by="scenario", source="scenario", status="firing", alertname=alertname,
            service=self.target.service, severity=severity,
            labels={"alertname": alertname, "service": self.target.service, "env": "staging",
                    "severity": severity, "process": self.target.process, **labels},
            annotations={"summary": summary}, starts_at=datetime.now(UTC),
        )  # fmt: skip
        await self.publisher.publish(alert)
        self.fired.append(alert)
        self.say(f"alert fired: [bold]{alertname}[/bold] ({severity}) on {self.target.service}")
        return alert

    async def record_deploy(self, version: str, previous: str) -> None:
        """Announce a deploy as a CD pipeline would (ChangeRecorded), before it happens."""
        change = ChangeRecorded(
            produced_by="scenario", service=self.target.service, kind="deploy", version=version,
            previous_version=previous, author="ci", description=f"deploy {version} of {self.target.service}",
        )  # fmt: skip
        await self.publisher.publish(change)
        self.say(f"change recorded: deploy {previous} → {version}")

    async def resolve_alerts(self) -> None:
        """Send `resolved` for every alert fired, as Alertmanager does once the condition clears."""
        for alert in self.fired:
            resolved = alert.model_copy(
                update={"status": "resolved", "ends_at": datetime.now(UTC), "event_id": _new_event_id()}
            )
            await self.publisher.publish(resolved)
        self.fired.clear()

    async def incident_opened(self, alertname: str) -> str:
        def find(events: list[Event]) -> str | None:
            for event in events:
                if (
                    isinstance(event, IncidentOpened)
                    and event.service == self.target.service
                    and event.incident_id not in self.incidents
                    and any(a.alertname == alertname for a in event.alerts)
                ):
                    return event.incident_id
            return None

        incident_id = await self.watch.wait_for(find, self.timeout_s, f"an incident for {alertname}")
        self.incidents.append(incident_id)
        self.say(f"incident opened: [bold]{incident_id}[/bold]")
        return incident_id

    async def approve_when_asked(self, incident_id: str) -> None:
        """Wait for the escalation that asks for a decision, then approve it with `opswarm approve` (a real CLI run)."""

        def asked(events: list[Event]) -> EscalationRaised | None:
            return next(
                (
                    e
                    for e in events
                    if isinstance(e, EscalationRaised) and e.incident_id == incident_id and e.needs_decision
                ),
                None,
            )

        escalation = await self.watch.wait_for(asked, self.timeout_s, f"an approval request for {incident_id}")
        risk = escalation.risk
        self.say(f"approval requested: {escalation.reason}" + (f" [{risk.tier} {risk.score:.2f}]" if risk else ""))
        if escalation.brief:
            self.say("approver's brief:\n" + escape(escalation.brief))
        if self.approve_via == "none":
            self.say("nobody answers ([bold]--approve-via none[/bold]): the escalation policy takes its course")
            return
        if self.approve_via == "web":
            await self._approve_on_page(incident_id)
            return
        argv = [sys.executable, "-m", "deploy.cli", "approve", incident_id, "--by", OPERATOR, "-m", f"{self.name}"]
        self.say(f"[bold]$ opswarm approve {incident_id} --by {OPERATOR} -m {self.name}[/bold]")
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=CHECKOUT_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(process.communicate(), self.timeout_s)
        self.say(output.decode().strip())
        if process.returncode != 0:
            raise RuntimeError(f"opswarm approve exited {process.returncode}: {output.decode().strip()}")

    async def _approve_on_page(self, incident_id: str) -> None:
        base = f"http://127.0.0.1:{HTTP_PORTS['coordination']}"
        token = ensure_operator_credentials(self.settings.state_dir).token
        self.say(f"[bold]approving on {base}/approvals as {OPERATOR_NAME}[/bold]")
        comment = f"{self.name} (approvals page)"
        said = await approve_on_page(base, token, incident_id, comment, timeout_s=self.timeout_s)
        self.say(f"the page says: {escape(said)}")

    async def settled(self, incident_id: str) -> IncidentRecord:
        """Wait until coordination parks or closes the incident; its record then."""

        def final(events: list[Event]) -> IncidentState | None:
            for event in events:
                if (
                    isinstance(event, IncidentUpdated)
                    and event.incident_id == incident_id
                    and event.produced_by == "coordination"
                    and event.state in SETTLED
                ):
                    return event.state
            return None

        state = await self.watch.wait_for(final, self.timeout_s, f"incident {incident_id} to close or park")
        self.settled_at = time.monotonic()
        record = await self.store.get(incident_id)
        if record is None:
            raise RuntimeError(f"incident {incident_id} is on the bus but not in the incident store")
        self.say(f"incident {incident_id} is [bold]{state}[/bold]")
        return record


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    state: str
    actions: int
    approvals: int
    forbidden_blocked: int
    verified: bool
    seconds: float
    records: tuple[IncidentRecord, ...]
    forbidden_executed: int

    def line(self) -> str:
        return (
            f"scenario {self.name}: state={self.state} actions={self.actions} approvals={self.approvals} "
            f"forbidden_blocked={self.forbidden_blocked} verified={str(self.verified).lower()} "
            f"seconds={self.seconds:.1f}"
        )


def summarize(run: ScenarioRun, records: list[IncidentRecord], forbidden: frozenset[str]) -> ScenarioResult:
    ids = set(run.incidents)
    events = [e for e in run.watch.events if e.incident_id in ids]
    executed = [e for e in events if isinstance(e, ActionExecuted)]
    last = records[-1]
    verified = any(isinstance(e, VerificationPassed) and e.incident_id == last.incident_id for e in events)
    start = run.fault_at or run.started
    return ScenarioResult(
        name=run.name,
        state=last.state.value,
        actions=len(executed),
        approvals=sum(int(r.facts.get("approvals", 0)) for r in records),
        forbidden_blocked=sum(int(r.facts.get("forbidden_blocked", 0)) for r in records),
        verified=verified,
        seconds=(run.settled_at or time.monotonic()) - start,
        records=tuple(records),
        forbidden_executed=sum(1 for e in executed if e.step.action in forbidden),
    )


def _new_event_id() -> str:
    return str(uuid.uuid4())
