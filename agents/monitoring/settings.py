"""Settings of the monitoring process (environment prefix `OPSWARM_`, nesting with `__`)."""

from __future__ import annotations

from pydantic import Field

from scheduler.agent_settings import AgentSettings


class MonitoringSettings(AgentSettings):
    instance_id: str = "monitoring-0"
    consumer_group: str = "opswarm-monitoring"
    http_port: int | None = Field(default=9181, ge=0, le=65535)
    correlation_window_s: float = Field(default=300.0, gt=0)
    dedup_window_s: float = Field(default=60.0, gt=0)
    flap_threshold: int = Field(default=4, ge=2)
    flap_window_s: float = Field(default=600.0, gt=0)
