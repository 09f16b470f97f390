"""Settings of the coordination process (environment prefix `OPSWARM_`, nesting with `__`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, SecretStr, model_validator

from execution.risk import Environment, RiskPolicy
from scheduler.agent_settings import AgentSettings
from scheduler.arbitration import ArbitrationPolicy
from scheduler.escalations.access_tokens import ApiToken


class FreezeWindow(BaseModel):
    """A change freeze: no action is SAFE between `start` and `end` (both with a timezone)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> FreezeWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("freeze windows need timezones, e.g. 2026-12-24T00:00:00Z")
        if self.end <= self.start:
            raise ValueError("a freeze window must end after it starts")
        return self


class CoordinationSettings(AgentSettings):
    instance_id: str = "coordination-0"
    consumer_group: str = "opswarm-coordination"
    http_port: int | None = Field(default=9183, ge=0, le=65535)
    mongo_url: SecretStr = SecretStr("mongodb://127.0.0.1:27027/")
    mongo_database: str = "opswarm"
    incidents_collection: str = "incidents"
    mongo_timeout_s: float = Field(default=10.0, gt=0)
    default_environment: Environment = "prod"
    risk: RiskPolicy = RiskPolicy()
    arbitration: ArbitrationPolicy = ArbitrationPolicy()
    change_freezes: list[FreezeWindow] = Field(default_factory=list)
    safe_scripts: list[str] = Field(default_factory=list)
    # Escalations: the policy file (YAML or TOML; None: the built-in default policy, the approvals page only).
    escalation_policy_file: str | None = None
    # Who may use the approvals API and page: [{"name", "role": viewer|approver|admin, "sha256": of the token}].
    api_tokens: list[ApiToken] = Field(default_factory=list)
    # Signs one-time approval links (and the page's forms); None: no links are sent.
    link_secret: SecretStr | None = None
    link_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)
    # Where people reach this agent's HTTP side, for the links in messages.
    public_url: str = "http://127.0.0.1:9183"
