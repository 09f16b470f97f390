"""`python -m agents.monitoring`: the monitoring agent process."""

from __future__ import annotations

from agents.monitoring.service import run_monitoring
from agents.monitoring.settings import MonitoringSettings
from scheduler.agent_main import run_agent_process

if __name__ == "__main__":
    run_agent_process(MonitoringSettings, run_monitoring)
