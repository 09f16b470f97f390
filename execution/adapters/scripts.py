"""The `run_allowlisted_script` action: run a registered script, never anything else, never through a shell.

A script is registered by name with its absolute path and one regular expression per positional argument: the
i-th argument must fully match the i-th pattern, and there may not be more arguments than patterns. It runs as
`[path, *args]` under the step's timeout, in its own process group, with stdout and stderr kept up to a limit.
Scripts marked `safe` get a SAFE floor in the catalog (see `ScriptAllowlist.safe_names`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bus.events import PlanStep
from execution.adapters import ParamsCheckingAdapter
from execution.argv_runner import DEFAULT_OUTPUT_LIMIT, run_argv
from execution.catalog import RunAllowlistedScriptParams
from execution.results import ActionResult

log = logging.getLogger(__name__)


class AllowlistedScript(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    path: Path
    arg_patterns: list[str] = Field(default_factory=list)
    safe: bool = False
    cwd: Path | None = None
    env: dict[str, str] | None = None  # None: the agent's own environment

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        if not path.is_absolute():
            raise ValueError("a script's path must be absolute")
        return path

    @field_validator("arg_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            re.compile(pattern)
        return patterns

    def argument_problems(self, args: list[str]) -> list[str]:
        if len(args) > len(self.arg_patterns):
            return [f"{self.name} takes at most {len(self.arg_patterns)} arguments, got {len(args)}"]
        return [
            f"argument {index + 1} of {self.name} does not match {pattern}"
            for index, (arg, pattern) in enumerate(zip(args, self.arg_patterns, strict=False))
            if not re.fullmatch(pattern, arg)
        ]


class ScriptAllowlist(BaseModel):
    model_config = ConfigDict(frozen=True)

    scripts: list[AllowlistedScript] = Field(default_factory=list)
    output_limit: int = Field(default=DEFAULT_OUTPUT_LIMIT, ge=0)

    def get(self, name: str) -> AllowlistedScript | None:
        return next((script for script in self.scripts if script.name == name), None)

    def safe_names(self) -> frozenset[str]:
        return frozenset(script.name for script in self.scripts if script.safe)


class RunAllowlistedScriptAdapter(ParamsCheckingAdapter[RunAllowlistedScriptParams]):
    name = "run_allowlisted_script"
    params_model = RunAllowlistedScriptParams

    def __init__(self, allowlist: ScriptAllowlist) -> None:
        self._allowlist = allowlist

    async def run(
        self, step: PlanStep, params: RunAllowlistedScriptParams, *, timeout_s: float, started: float
    ) -> ActionResult:
        script = self._allowlist.get(params.script)
        if script is None:
            log.warning("script not in the allowlist, refused", extra={"script": params.script})
            return ActionResult.refused(f"script {params.script!r} is not in the allowlist", since=started)
        problems = script.argument_problems(params.args)
        if problems:
            return ActionResult.refused("; ".join(problems), since=started, data={"script": script.name})
        result = await run_argv(
            [str(script.path), *params.args],
            timeout_s=timeout_s,
            cwd=script.cwd,
            env=script.env,
            output_limit=self._allowlist.output_limit,
        )
        log.info("script ran", extra={"script": script.name, "status": result.status})
        return result.model_copy(update={"data": {"script": script.name, **result.data}})
