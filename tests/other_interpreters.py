"""Runs a snippet in fresh interpreters with other hash seeds: what a stable hash must give the same in all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def outputs_with_hash_seeds(script: str, payload: Any, seeds: tuple[str, ...] = ("1", "2")) -> list[Any]:
    """`script` (reads JSON from sys.argv[1], prints JSON) run once per PYTHONHASHSEED; each run's parsed output."""
    outputs = []
    for seed in seeds:
        out = subprocess.run(
            [sys.executable, "-c", script, json.dumps(payload)],
            cwd=REPO, env={"PYTHONHASHSEED": seed}, capture_output=True, check=True, text=True,
        )  # fmt: skip
        outputs.append(json.loads(out.stdout))
    return outputs
