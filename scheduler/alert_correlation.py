"""Monitoring's memory of alerts in Redis: dedup, correlation into incidents, flap suppression, resolves, storms.

Every alert gets exactly one outcome, so an alert storm can be accounted for to the last alert:

- `opened`: the first alert of its group within the correlation window opened a new incident;
- `merged`: it joined (or changed: re-fired, resolved) the open incident of its group;
- `duplicate`: the same alert with the same status again (Alertmanager re-sends firing alerts);
- `suppressed`: the alert is flapping (its status changed too often within the flap window), or it resolves an
  alert no open incident knows.

Storms: alerts belong to a service group (`storm_group_by`, the `namespace` label by default; an alert without
one never storms). When a group's alerts come faster than `storm_alert_threshold` per `storm_rate_window_s`, or
it opened `storm_open_limit` incidents within `storm_window_s`, the group storms: alerts of its services that
have no open incident of their own join the group's storm incident (the first incident it opened within the
window, while that is open) instead of opening thousands. The storm ends after `storm_window_s` without alerts,
or when its incident resolves.

The decision for one alert is one Lua script (scheduler/alert_decision_script.py), so monitoring replicas sharing
Redis agree; a batch of them is one pipelined round trip. Keys (standalone Redis): `<prefix>:alerts:last:<fp>`,
`:flap:<fp>`, `:alert:<fp>` (its incident), `:group:<key>` (open incident of a group, expiring after the
correlation window of quiet), `:incident:<id>` (alert fingerprint → status, with `:n` counts and `:s` services),
`:storm:<group>`, `:rate:<group>`, `:opened:<group>`, and `:decision:<record>`: the outcome of each alert record
(topic, partition, offset and event id), so that a record redelivered after an aborted Kafka transaction or a
rebalance gets the same outcome again, while the same alert sent again (a new record) is a duplicate.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from bus.alert_fingerprints import DEFAULT_GROUP_BY, FingerprintRule, fingerprint, group_key
from bus.events import AlertReceived
from scheduler.alert_decision_script import DECIDE_ALERTS
from scheduler.clock import Clock, WallClock
from scheduler.redis_area import DEFAULT_CALL_TIMEOUT_S, DEFAULT_PREFIX, RedisArea, as_int, as_text, milliseconds

log = logging.getLogger(__name__)

AREA = "alerts"
SEVERITY_RANK = {"info": 0, "warning": 1, "high": 2, "critical": 3}

Kind = Literal["opened", "merged", "duplicate", "suppressed"]
Effect = Literal["opened", "alert_added", "alert_refired", "alert_resolved", "escalated", "resolved", "none"]
DEFAULT_STORM_GROUP_BY = ("namespace",)
# A Kafka record: topic, partition, offset.
RecordRef = tuple[str, int, int]


@dataclass(frozen=True)
class CorrelationRules:
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    fingerprint: FingerprintRule = FingerprintRule()
    # An open incident takes new alerts of its group until the group was quiet this long.
    correlation_window_s: float = 300.0
    # The same alert with the same status within this window is a duplicate.
    dedup_window_s: float = 60.0
    # This many status changes of one alert within the flap window mark it flapping.
    flap_threshold: int = 4
    flap_window_s: float = 600.0
    # How long alert and incident state is kept without news.
    state_ttl_s: float = 24 * 3600.0
    # Storms (see the module's docstring); a threshold or limit of 0 turns that trigger off.
    storm_group_by: tuple[str, ...] = DEFAULT_STORM_GROUP_BY
    storm_rate_window_s: float = 10.0
    storm_alert_threshold: int = 20
    storm_open_limit: int = 3
    storm_window_s: float = 60.0

    def storm_group(self, alert: AlertReceived) -> str | None:
        """`namespace=shop`: the alert's service group; None when it has none of the labels."""
        values = [(name, alert.labels.get(name, "")) for name in self.storm_group_by]
        if not any(value for _, value in values):
            return None
        return ",".join(f"{name}={value}" for name, value in values)


@dataclass(frozen=True)
class CorrelationOutcome:
    kind: Kind
    effect: Effect
    incident_id: str | None
    fingerprint: str
    firing: int = 0
    total: int = 0
    reason: str = ""
    # Set when the incident is its service group's storm incident.
    storm_group: str | None = None
    services: int = 0
    storm_started: bool = False


def new_incident_id() -> str:
    return f"inc-{uuid.uuid4().hex[:12]}"


class AlertCorrelator:
    def __init__(
        self,
        redis: Redis,
        rules: CorrelationRules = CorrelationRules(),
        prefix: str = DEFAULT_PREFIX,
        *,
        clock: Clock | None = None,
        incident_ids: Callable[[], str] = new_incident_id,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        self._rules = rules
        self._clock = clock or WallClock()
        self._incident_ids = incident_ids
        self._area = RedisArea(redis, prefix=prefix, area=AREA, call_timeout_s=call_timeout_s)
        self._decide = self._area.script(DECIDE_ALERTS)

    async def observe(self, alert: AlertReceived, record: RecordRef | None = None) -> CorrelationOutcome:
        """Decide what this alert means and remember it; `record` is the Kafka record it came in, else the event
        id stands for it."""
        (outcome,) = await self.observe_many([(alert, record)])
        return outcome

    async def observe_many(self, alerts: Sequence[tuple[AlertReceived, RecordRef | None]]) -> list[CorrelationOutcome]:
        """Decide a batch of alerts, in order, in one call to Redis (each decision atomic on its own).

        Alerts with records must all come from one partition (a consumer's batch): the script keeps the partition's
        highest decided offset, and looks up remembered decisions only at or below it.
        """
        if not alerts:
            return []
        rules = self._rules
        partitions = {(record[0], record[1]) for _, record in alerts if record is not None}
        if len(partitions) > 1:
            raise ValueError("a batch of alerts with records must come from one partition")
        records_area = self._area.key("records", *map(str, partitions.pop())) + ":" if partitions else ""
        items, prepared = [], []
        for alert, record in alerts:
            fp = fingerprint(alert, rules.fingerprint)
            group = rules.storm_group(alert)
            memory = f"{record_name(*record)}:{alert.event_id}" if record else alert.event_id
            items.append([
                alert.status, fp, SEVERITY_RANK[alert.severity], alert.service, group_key(alert, rules.group_by),
                group or "", memory, self._incident_ids(), record[2] if record else -1,
            ])  # fmt: skip
            prepared.append((fp, group))
        call = self._decide(args=[self._rules_json(), json.dumps(items), records_area])
        decisions = json.loads(await self._area.run("correlate", call))
        outcomes = [_outcome(d, fp, group) for d, (fp, group) in zip(decisions, prepared, strict=True)]
        log.debug("alerts correlated", extra={"alerts": len(outcomes)})
        return outcomes

    def _rules_json(self) -> str:
        rules = self._rules
        return json.dumps({
            "area": self._area.key("-").removesuffix("-"), "now": self._clock.now(),
            "dedup_ms": milliseconds(rules.dedup_window_s), "flap_window_s": rules.flap_window_s,
            "flap_threshold": rules.flap_threshold, "group_window_ms": milliseconds(rules.correlation_window_s),
            "ttl_ms": milliseconds(rules.state_ttl_s), "storm_rate_window_s": rules.storm_rate_window_s,
            "storm_alert_threshold": rules.storm_alert_threshold, "storm_open_limit": rules.storm_open_limit,
            "storm_window_ms": milliseconds(rules.storm_window_s),
        })  # fmt: skip


def record_name(topic: str, partition: int, offset: int) -> str:
    """The name of a Kafka record for the decision memory."""
    return f"{topic}:{partition}:{offset}"


def _outcome(decision: list[object], fp: str, group: str | None) -> CorrelationOutcome:
    kind, effect, incident, firing, total, reason, storm, services, started = decision
    return CorrelationOutcome(
        kind=as_text(kind),  # type: ignore[arg-type]
        effect=as_text(effect),  # type: ignore[arg-type]
        incident_id=as_text(incident) if incident else None,
        fingerprint=fp,
        firing=as_int(firing),
        total=as_int(total),
        reason=as_text(reason) or "",
        storm_group=group if as_int(storm) else None,
        services=as_int(services),
        storm_started=bool(as_int(started)),
    )
