"""What a channel sends and what it reports back, and the configuration of each kind of channel.

A `Notification` is one message about one pending decision to one tier: what is asked, why (the approver's brief),
and where to answer (signed links, the approvals page). Every channel turns it into its own format and returns a
`DeliveryResult` instead of raising: delivered (with the attempts it took) or failed (with the last error), so that
one channel failing never stops the others and every outcome lands in the incident's audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr


@dataclass(frozen=True)
class Notification:
    incident_id: str
    action_id: str | None
    # The tier being asked (its name in the policy) and its recipients (e-mail addresses, handles, names).
    tier: str
    recipients: tuple[str, ...]
    # One line: what is asked ("Approve rollback_deploy on checkout? CONFIRM 0.48").
    title: str
    # The body: the approver's brief and the incident's facts, plain text.
    text: str
    severity: str
    # Where to answer: "approve" and "reject" (signed one-time links), "page" (the approvals page).
    links: dict[str, str] = field(default_factory=dict)
    # 0 for the tier's first message, n for its n-th reminder.
    reminder: int = 0
    # "new": ask; "resolved": the question was answered or expired (PagerDuty resolves its alert then).
    kind: Literal["new", "resolved"] = "new"

    @property
    def dedup_key(self) -> str:
        """The same for every message about one decision (PagerDuty's dedup_key)."""
        return f"opswarm/{self.incident_id}/{self.action_id or 'none'}"


@dataclass(frozen=True)
class DeliveryResult:
    channel: str
    status: Literal["delivered", "failed"]
    attempts: int
    error: str | None = None
    # What the receiver said back (HTTP status, message id...), for the audit.
    detail: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    name: str

    async def send(self, notification: Notification) -> DeliveryResult: ...


class RetryPolicy(BaseModel):
    """Attempts of one delivery: `attempts` in all, waiting backoff_s, then ×factor, at most max_backoff_s."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int = Field(default=3, ge=1, le=10)
    backoff_s: float = Field(default=0.5, ge=0, le=60)
    factor: float = Field(default=2.0, ge=1, le=10)
    max_backoff_s: float = Field(default=10.0, ge=0, le=300)
    # Each attempt's own bound.
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class _ChannelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    retry: RetryPolicy = RetryPolicy()


class SlackChannelConfig(_ChannelConfig):
    """A Slack incoming webhook (the URL is the secret)."""

    type: Literal["slack"] = "slack"
    webhook_url: SecretStr


class WebhookChannelConfig(_ChannelConfig):
    """A generic JSON webhook; the body is signed with HMAC-SHA256 under `secret`."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr


class EmailChannelConfig(_ChannelConfig):
    """E-mail over SMTP to the tier's recipients."""

    type: Literal["email"] = "email"
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    sender: str
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None


class PagerDutyChannelConfig(_ChannelConfig):
    """PagerDuty Events API v2: trigger on a new question, resolve when it is answered or expired."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: SecretStr
    url: str = Field(default="https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://")


ChannelConfig = Annotated[
    SlackChannelConfig | WebhookChannelConfig | EmailChannelConfig | PagerDutyChannelConfig,
    Field(discriminator="type"),
]
