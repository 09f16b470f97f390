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
    # Alerts per batch (one Redis round trip and one Kafka transaction each).
    max_batch: int = Field(default=1000, ge=1, le=10_000)
    # Storm mode (see scheduler/alert_correlation.py); a threshold or limit of 0 turns that trigger off.
    storm_group_by: list[str] = Field(default_factory=lambda: ["namespace"])
    storm_rate_window_s: float = Field(default=10.0, gt=0)
    storm_alert_threshold: int = Field(default=20, ge=0)
    storm_open_limit: int = Field(default=3, ge=0)
    storm_window_s: float = Field(default=60.0, gt=0)
