"""Read-only diagnostic commands: an allowlist of argv templates, and nothing else may run.

A template is a tuple of argv elements; an element `{name}` is replaced, whole, by the param `name`, which must
fully match that param's pattern and may not start with "-" (so it can never become an option). Params are never
interpolated inside an element and nothing goes through a shell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from execution.argv_runner import run_argv
from execution.results import ActionResult

_PLACEHOLDER = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")
_ABSOLUTE_PATH = r"/[A-Za-z0-9._/-]*"
_PID = r"[1-9][0-9]{0,9}"


class DiagnosticCommand(BaseModel):
    """One allowed command: `argv` with `{param}` placeholders, and the pattern each param must match."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    argv: tuple[str, ...] = Field(min_length=1)
    params: dict[str, str] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _placeholders_match_params(self) -> DiagnosticCommand:
        if _PLACEHOLDER.match(self.argv[0]):
            raise ValueError("the program itself cannot be a parameter")
        used = {m.group(1) for element in self.argv if (m := _PLACEHOLDER.match(element))}
        if used != set(self.params):
            raise ValueError(f"placeholders {sorted(used)} and params {sorted(self.params)} differ")
        return self

    def render(self, params: Mapping[str, str]) -> tuple[list[str] | None, list[str]]:
        """(argv, []) when `params` are acceptable, else (None, problems)."""
        problems = [f"unexpected param {key!r}" for key in sorted(set(params) - set(self.params))]
        for key, pattern in self.params.items():
            value = params.get(key)
            if value is None:
                problems.append(f"missing param {key!r}")
            elif value.startswith("-") or not re.fullmatch(pattern, value):
                problems.append(f"param {key!r} does not match {pattern}")
        if problems:
            return None, problems
        return [self._element(element, params) for element in self.argv], []

    @staticmethod
    def _element(element: str, params: Mapping[str, str]) -> str:
        match = _PLACEHOLDER.match(element)
        return params[match.group(1)] if match else element


DEFAULT_DIAGNOSTICS: tuple[DiagnosticCommand, ...] = (
    DiagnosticCommand(name="uptime", argv=("uptime",), description="load averages"),
    DiagnosticCommand(
        name="disk_usage", argv=("df", "-h", "{path}"), params={"path": _ABSOLUTE_PATH}, description="free space"
    ),
    DiagnosticCommand(
        name="process_info",
        argv=("ps", "-o", "pid,etime,cmd", "-p", "{pid}"),
        params={"pid": _PID},
        description="a process's age and command line",
    ),
    DiagnosticCommand(name="memory", argv=("free", "-m"), description="memory use in MiB"),
)


class DiagnosticAllowlist:
    """The diagnostic commands that may run; anything else is refused."""

    def __init__(self, commands: Iterable[DiagnosticCommand] = DEFAULT_DIAGNOSTICS) -> None:
        self._commands = {command.name: command for command in commands}

    def names(self) -> list[str]:
        return sorted(self._commands)

    def render(self, name: str, params: Mapping[str, str] | None = None) -> tuple[list[str] | None, list[str]]:
        """(argv, []) for an allowed command with acceptable params, else (None, problems)."""
        command = self._commands.get(name)
        if command is None:
            return None, [f"diagnostic {name!r} is not in the allowlist"]
        return command.render(params or {})

    async def run(
        self, name: str, params: Mapping[str, str] | None = None, *, timeout_s: float, cwd: Path | None = None
    ) -> ActionResult:
        """Run an allowed diagnostic; `refused` for anything the allowlist does not accept."""
        argv, problems = self.render(name, params)
        if argv is None:
            return ActionResult(status="refused", error="; ".join(problems), data={"diagnostic": name})
        return await run_argv(argv, timeout_s=timeout_s, cwd=cwd)
