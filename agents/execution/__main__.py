"""`python -m agents.execution`: the execution agent process."""

from __future__ import annotations

from agents.execution.service import run_execution
from agents.execution.settings import ExecutionSettings
from scheduler.agent_main import run_agent_process

if __name__ == "__main__":
    run_agent_process(ExecutionSettings, run_execution)
