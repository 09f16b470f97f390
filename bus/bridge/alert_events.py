"""From a webhook body to AlertReceived events: validation, label rules, severities and deterministic ids.

Rules:

- `alertname` comes from the `alertname` label (Alertmanager) or field (generic); it must not be empty.
- `service` comes from the `service` label, else the `app` label (the usual name of an application's label in
  Kubernetes); `job` is never used: it names a scrape job, and here one job (`opswarm-targets`) scrapes every
  service, so taking it would merge unrelated services' alerts into one incident and aim actions at no service.
  An alert without alertname or service is refused (422, naming the alert's index and the missing label; the
  payload models check it, so that one answer lists every problem of every alert).
- `severity` is mapped onto critical / high / warning / info (see SEVERITY_ALIASES); anything else is warning.
- `event_id` is a uuid5 over (source, the alert's identity, status, start, end). The identity is the sender's
  fingerprint (Alertmanager's hash of the label set) or else a hash of the labels (with alertname and service).
  The same notification sent again (Alertmanager retries after a 5xx or a timeout, even when the first attempt's
  records did land; an HA pair of Alertmanagers both notify) therefore carries the same event ids, and monitoring,
  which remembers its decision per event id, decides the same again instead of taking it for a new alert.
  An alert without a start time (generic alerts may omit it) has no stable identity in time: the time of receipt
  stands in for it, so each send of it is a new event (monitoring's dedup window still folds repeats).
- `correlation_id` is a uuid5 over (source, identity, start): a firing alert and its resolve share it.

Per alert this is the bridge's hot path (an alert storm brings thousands a second): the uuid5s are computed
straight from SHA-1 (the very uuid.uuid5 values, a third of the cost), each time string once per alert, the
trace context of each event is handed to the event's own validation as a mapping (validated there, not twice),
and `encoded_events` encodes each event once: its bytes are both size-checked and what goes to Kafka.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from bus.bridge.alert_payloads import SERVICE_LABELS, AlertmanagerWebhook, GenericAlerts, describe_validation
from bus.bridge.rejections import Rejection, invalid
from bus.codec import encode_event
from bus.events import AlertReceived, AlertStatus, Severity, TraceContext

log = logging.getLogger(__name__)

PRODUCED_BY = "bridge"
# Fixed for good: changing it changes every event id, and a re-send across the change would look new.
EVENT_ID_NAMESPACE = uuid.UUID("0b7e2f0e-4b8a-5c1d-9a53-6f1e8d2c4a70")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes
# Kafka refuses records over ~1 MiB (producer max_request_size, broker message.max.bytes); keep clear of it.
MAX_EVENT_BYTES = 1_000_000

_SEVERITY_WORDS: dict[Severity, tuple[str, ...]] = {
    "critical": ("critical", "crit", "fatal", "page", "emergency", "emerg", "alert", "disaster", "p1"),
    "high": ("high", "error", "err", "major", "p2"),
    "warning": ("warning", "warn", "medium", "minor", "average", "p3"),
    "info": ("info", "informational", "information", "low", "notice", "none", "debug", "p4", "p5"),
}
# Lower-cased label values and what they mean; anything else is "warning".
SEVERITY_ALIASES: dict[str, Severity] = {word: level for level, words in _SEVERITY_WORDS.items() for word in words}


@dataclass(frozen=True)
class Receipt:
    """What the events of one request share: when it arrived and the trace it belongs to."""

    at: datetime
    trace: TraceContext
    # "version-traceid-" and "-flags" of `trace`: a child span's traceparent is these around a new span id.
    _span_prefix: str = field(init=False, repr=False, compare=False)
    _span_suffix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        version, trace_id, _, flags = self.trace.traceparent.split("-")
        object.__setattr__(self, "_span_prefix", f"{version}-{trace_id}-")
        object.__setattr__(self, "_span_suffix", f"-{flags}")

    def child_trace(self) -> dict[str, str | None]:
        """A new span in the receipt's trace (as TraceContext.child), as fields for the event to validate: a
        TraceContext instance costs more per alert than a mapping validated with the event."""
        traceparent = f"{self._span_prefix}{secrets.token_hex(8)}{self._span_suffix}"
        return {"traceparent": traceparent, "tracestate": self.trace.tracestate}

    @classmethod
    def now(cls, traceparent: str | None = None) -> Receipt:
        """Now, in the sender's trace when it sent a valid W3C `traceparent`, else in a new one."""
        trace = TraceContext.new_root()
        if traceparent:
            try:
                trace = TraceContext(traceparent=traceparent.strip())
            except ValidationError:
                pass
        return cls(at=datetime.now(UTC), trace=trace)


def severity_of(value: str | None) -> Severity:
    return SEVERITY_ALIASES.get((value or "").strip().lower(), "warning")


def service_of(labels: Mapping[str, str]) -> str | None:
    for name in SERVICE_LABELS:
        value = labels.get(name)
        if value:
            return value
    return None


def alert_identity(fingerprint: str | None, labels: Mapping[str, str]) -> str:
    if fingerprint:
        return f"fingerprint:{fingerprint}"
    canonical = "\x1f".join(f"{key}\x1e{labels[key]}" for key in sorted(labels))
    return f"labels:{hashlib.sha256(canonical.encode()).hexdigest()}"


def alert_ids(
    source: str, identity: str, status: AlertStatus, anchor: datetime, ends_at: datetime | None
) -> tuple[str, str]:
    """(event_id, correlation_id) of an alert; `anchor` is its start, or the receipt's time when it has none."""
    start = _iso(anchor)  # in both names: formatted once
    event_id = _uuid5("\x1f".join(["event", source, identity, status, start, _iso(ends_at)]))
    return event_id, _uuid5("\x1f".join(["correlation", source, identity, start]))


def alertmanager_events(body: object, receipt: Receipt) -> list[AlertReceived]:
    """The AlertReceived of every alert of an Alertmanager webhook body; Rejection(422) naming every problem."""
    try:
        webhook = AlertmanagerWebhook.model_validate(body)
    except ValidationError as exc:
        raise invalid("Alertmanager webhook", describe_validation(exc)) from None
    if webhook.truncated_alerts:  # its receiver's max_alerts: those alerts are not in this body
        log.warning("alertmanager truncated alerts", extra={"truncated": webhook.truncated_alerts,
                                                             "group_key": webhook.group_key})  # fmt: skip
    return [
        _event(
            receipt, index, source="alertmanager", status=alert.status, alertname=alert.labels["alertname"],
            service=service_of(alert.labels) or "", severity=severity_of(alert.labels.get("severity")),
            labels=alert.labels, annotations=alert.annotations, starts_at=alert.starts_at, ends_at=alert.ends_at,
            fingerprint=alert.fingerprint or None, generator_url=alert.generator_url or None,
        )
        for index, alert in enumerate(webhook.alerts)
    ]  # fmt: skip


def generic_events(body: object, receipt: Receipt) -> list[AlertReceived]:
    """The AlertReceived of every alert of a `POST /alerts` body; Rejection(422) naming every problem."""
    try:
        payload = GenericAlerts.model_validate(body)
    except ValidationError as exc:
        raise invalid("alert list", describe_validation(exc)) from None
    return [
        _event(
            receipt, index, source=payload.source, status=alert.status, alertname=alert.alertname,
            service=alert.service, severity=severity_of(alert.severity or alert.labels.get("severity")),
            labels=alert.labels, annotations=alert.annotations, starts_at=alert.starts_at, ends_at=alert.ends_at,
            fingerprint=alert.fingerprint, generator_url=alert.generator_url,
        )
        for index, alert in enumerate(payload.alerts)
    ]  # fmt: skip


def encoded_events(events: list[AlertReceived]) -> list[bytes]:
    """Each event's bytes on the wire (what the bridge publishes); Rejection(413) when one would be too large for
    Kafka (one huge annotation, say)."""
    values = [encode_event(event) for event in events]
    for index, value in enumerate(values):
        if len(value) > MAX_EVENT_BYTES:
            raise Rejection(
                413, "too_large",
                f"alerts[{index}] would be a {len(value)}-byte event; Kafka takes up to {MAX_EVENT_BYTES}",
            )  # fmt: skip
    return values


def _event(
    receipt: Receipt,
    index: int,
    *,
    source: str,
    status: AlertStatus,
    alertname: str,
    service: str,
    severity: Severity,
    labels: dict[str, str],
    annotations: dict[str, str],
    starts_at: datetime | None,
    ends_at: datetime | None,
    fingerprint: str | None,
    generator_url: str | None,
) -> AlertReceived:
    identity = alert_identity(fingerprint, {**labels, "alertname": alertname, "service": service})
    event_id, correlation_id = alert_ids(source, identity, status, starts_at or receipt.at, ends_at)
    try:
        return AlertReceived(
            event_id=event_id, correlation_id=correlation_id,
            produced_by=PRODUCED_BY, occurred_at=receipt.at, trace=receipt.child_trace(),
            source=source, status=status, alertname=alertname, service=service, severity=severity,
            labels=labels, annotations=annotations, starts_at=starts_at, ends_at=ends_at,
            source_fingerprint=fingerprint, generator_url=generator_url,
        )  # fmt: skip
    except ValidationError as exc:  # the payload models should make this impossible; say which alert if not
        raise invalid("alert", [f"alerts[{index}]: {line}" for line in describe_validation(exc)]) from None


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="microseconds")


def _uuid5(name: str) -> str:
    """str(uuid.uuid5(EVENT_ID_NAMESPACE, name)), without building UUID objects: SHA-1 of namespace and name, its
    first 16 bytes with the version (5) and the RFC 4122 variant set."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
