"""`opswarm demo` end to end on the real stack: a demo service breaks, Prometheus's rules notice, Alertmanager sends
the alert to the bridge, and the swarm heals it (or escalates it, as designed) without anyone publishing an alert
by hand."""

from __future__ import annotations

import re

import pytest

from bus.codec import decode_event
from bus.events import AlertReceived, DiagnosisCompleted, IncidentOpened
from bus.topics import ALERTS, DIAGNOSIS, INCIDENTS
from knowledge.incident_store import IncidentStore
from tests.e2e.conftest import Swarm, executed_actions
from tests.integration.kafka_reading import TopicReader
from tests.integration.opswarm_cli import run_opswarm
from tests.services import ServiceEndpoints, SuiteSettings

pytestmark = pytest.mark.e2e

DEMO_LINE = re.compile(
    r"^demo: faults=(?P<faults>\d+) remediated=(?P<remediated>\d+) escalated=(?P<escalated>\d+) "
    r"mttr_s_p50=(?P<mttr>[0-9.]+|n/a) swarm_share_s_p50=(?P<share>[0-9.]+|n/a) verified=(?P<verified>\d+)$"
)


async def test_demo_heals_a_crash_and_escalates_corruption_through_alertmanager(
    swarm: Swarm, swarm_store: IncidentStore, services: ServiceEndpoints, settings: SuiteSettings
) -> None:
    namespace = swarm.env["OPSWARM_KAFKA__TOPIC_NAMESPACE"]
    config = services.settings(settings).kafka.model_copy(update={"topic_namespace": namespace})
    async with TopicReader(config, [config.topic(t) for t in (ALERTS, INCIDENTS, DIAGNOSIS)]) as reader:
        result = await run_opswarm(
            "demo", "--fault", "crash", "--fault", "db-corruption", env={**swarm.env, "COLUMNS": "200"}, timeout_s=400
        )
        assert result.returncode == 0, result.describe()
        await reader.drain()
    line = DEMO_LINE.match(result.last_line)
    assert line, result.describe()
    figures = line.groupdict()
    assert (figures["faults"], figures["remediated"], figures["escalated"], figures["verified"]) == ("2", "1", "1", "1")
    assert float(figures["mttr"]) <= 60 and float(figures["share"]) > 0, result.last_line

    events = [decode_event(r.value) for r in reader.records]
    services_seen = {
        prefix: sorted({e.service for e in events if isinstance(e, AlertReceived) and e.service.startswith(prefix)})
        for prefix in ("demo-crash-", "demo-db-")
    }
    assert all(len(found) == 1 for found in services_seen.values()), services_seen
    for (service,) in services_seen.values():
        alerts = [e for e in events if isinstance(e, AlertReceived) and e.service == service]
        # Nobody published these: Prometheus's rule fired and Alertmanager posted it to the bridge.
        assert alerts and {(a.source, a.produced_by) for a in alerts} == {("alertmanager", "bridge")}, alerts
        opened = [e for e in events if isinstance(e, IncidentOpened) and e.service == service]
        seen = [(e.incident_id, [(a.alertname, a.status, a.starts_at) for a in e.alerts]) for e in opened]
        assert len({e.incident_id for e in opened}) == 1, seen
        record = await swarm_store.get(opened[0].incident_id)
        assert record is not None
        # The demo seeded its runbooks into the knowledge base; diagnosis cites the one of the alert first.
        [diagnosis] = [e for e in events if isinstance(e, DiagnosisCompleted) and e.incident_id == record.incident_id]
        cited = [e.source for e in diagnosis.evidence if e.kind == "runbook"]
        runbook = "service-down.md" if service.startswith("demo-crash-") else "database-corruption.md"
        assert cited and cited[0].endswith(f"/deploy/demo/runbooks/{runbook}"), diagnosis.evidence
        assert runbook in result.stdout
        if service.startswith("demo-crash-"):
            assert record.state.value == "CLOSED" and executed_actions(record) == ["restart_process"], record
        else:
            # Parked for a human with nothing run; it may be closed since, once the demo removed the service and
            # Alertmanager sent the resolve.
            moves = [e.detail["to"] for e in record.audit if e.action == "transition"]
            assert "PARKED" in moves and executed_actions(record) == [], record
