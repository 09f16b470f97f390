"""What the bridge accepts, as pydantic models: Alertmanager's webhook (version 4) and a generic JSON alert list.

Timestamps are RFC 3339 with a timezone. Alertmanager writes Go's nanoseconds (`2026-11-21T04:17:08.638817295Z`);
they are cut to microseconds (Python's resolution) here, by our own parser rather than whatever the installed
pydantic does with more than six fractional digits. Go's zero time (`0001-01-01T00:00:00Z`, Alertmanager's "no
end" for a firing alert), and any instant in the year 1, means "no time": None.

Alertmanager's models ignore fields they do not know (its format grows); the generic models refuse them, so a
misspelt field (`startsAt` for `starts_at`) is a 422 instead of silently lost data.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from bus.events import AlertStatus

_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})$"
)
_EXAMPLE_TIME = "2026-11-21T04:17:08.638817295Z"
# Go's zero time as Alertmanager writes it: the endsAt of every firing alert (taken without the regex).
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"
# Where an Alertmanager alert's service comes from, in this order (see alert_events for why not `job`).
SERVICE_LABELS = ("service", "app")


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp (up to nanoseconds, a timezone required) as an aware UTC datetime; Go's zero: None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("the timestamp needs a timezone")
        return None if value.year <= 1 else value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 timestamp string such as {_EXAMPLE_TIME}")
    if value == _GO_ZERO_TIME:
        return None
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp with a timezone (such as {_EXAMPLE_TIME}): {value[:64]!r}")
    if match["date"].startswith("0001-"):
        return None
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = "+00:00" if match["zone"] in ("Z", "z") else match["zone"]
    try:
        return datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}{zone}").astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid point in time: {value[:64]!r} ({exc})") from None


Timestamp = Annotated[datetime | None, BeforeValidator(parse_timestamp)]
Labels = dict[str, str]


class _Alertmanager(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class _Generic(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlertmanagerAlert(_Alertmanager):
    """One alert of a notification; its labels carry `alertname`, `service` (or `app`) and `severity`."""

    status: AlertStatus
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    starts_at: Timestamp = Field(alias="startsAt")
    ends_at: Timestamp = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("labels")
    @classmethod
    def _identifying_labels(cls, labels: Labels) -> Labels:
        missing = []
        if not labels.get("alertname"):
            missing.append("label 'alertname' is missing")
        if not _has_service(labels):
            missing.append("label 'service' is missing (and no 'app' label to use instead; 'job' is not taken)")
        if missing:
            raise ValueError("; ".join(missing))
        return labels


def _has_service(labels: Labels) -> bool:
    for name in SERVICE_LABELS:  # a loop, not any(<generator>): this runs for every alert of a storm
        if labels.get(name):
            return True
    return False


class AlertmanagerWebhook(_Alertmanager):
    """The body Alertmanager's webhook receiver posts (https://prometheus.io/docs/alerting/latest/configuration/)."""

    version: Literal["4"]
    status: AlertStatus
    alerts: list[AlertmanagerAlert] = Field(min_length=1)
    receiver: str = ""
    group_key: str = Field(default="", alias="groupKey")
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")


class GenericAlert(_Generic):
    """One alert from any other source. `starts_at` (and `ends_at` on a resolve) make re-sends idempotent."""

    alertname: str = Field(min_length=1)
    service: str = Field(min_length=1)
    status: AlertStatus = "firing"
    # critical, high, warning or info; common synonyms (error, page, minor, ...) are mapped, unknown is warning.
    # When absent, the `severity` label is used.
    severity: str | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    starts_at: Timestamp = None
    ends_at: Timestamp = None
    # The sender's identity of the alert (same alert, same fingerprint); default: a hash of its labels.
    fingerprint: str | None = Field(default=None, min_length=1)
    generator_url: str | None = None


class GenericAlerts(_Generic):
    """`POST /alerts`: alerts of one source; `source` goes into every AlertReceived."""

    source: str = Field(default="generic", pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    alerts: list[GenericAlert] = Field(min_length=1)


def describe_validation(exc: ValidationError, limit: int = 20) -> list[str]:
    """One readable line per problem, naming the field by its wire path (`alerts[3].labels.severity: ...`)."""
    problems = []
    for error in exc.errors(include_url=False)[:limit]:
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        elif not error["loc"] and error["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = "the body must be a JSON object"
        problems.append(f"{field_path(error['loc'])}: {message}")
    if exc.error_count() > limit:
        problems.append(f"... and {exc.error_count() - limit} more problems")
    return problems


def field_path(loc: tuple[int | str, ...]) -> str:
    """("alerts", 3, "labels") -> "alerts[3].labels"; the empty location is the body itself."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"
