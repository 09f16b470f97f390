"""`python -m agents.diagnosis`: the diagnosis agent process."""

from __future__ import annotations

from agents.diagnosis.service import run_diagnosis
from agents.diagnosis.settings import DiagnosisSettings
from scheduler.agent_main import run_agent_process

if __name__ == "__main__":
    run_agent_process(DiagnosisSettings, run_diagnosis)
