"""`opswarm escalations check PATH`: the table and summary line for a good file, exit 1 and the problems on stderr
for a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from deploy import escalations_cli
from deploy.escalations_cli import escalations_app

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "escalations.example.yaml"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    # Wide enough that no cell wraps (rich reads the width once, when the module's console is made).
    monkeypatch.setattr(escalations_cli, "console", Console(width=200, highlight=False))
    return CliRunner()


def test_check_the_example(runner: CliRunner) -> None:
    result = runner.invoke(escalations_app, ["check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "escalations check: policies=2 channels=3 tiers=5"
    for shown in (
        "prod-urgent",
        "services: prod-*, checkout, payments",
        "1. on-call: 300s, remind every 120s; ops-slack, pagerduty; 2 recipients",
        "3. incident-commander: 900s; ops-email, pagerduty; 1 recipient",
        "deny after 1800s",
        "score ≥ 0.6",
        "keep_waiting after 5400s",
        "default (default)",
        "approvals page only; 0 recipients",
    ):
        assert shown in result.stdout
    # The file holds secrets: the table shows none of them.
    for secret in ("fake-routing-key", "fake-smtp-password", "not-a-real-token"):
        assert secret not in result.output


def test_registered_as_a_sub_app(runner: CliRunner) -> None:
    """As deploy/cli.py mounts it: `opswarm escalations check PATH`."""
    app = typer.Typer()
    app.add_typer(escalations_app, name="escalations")
    result = runner.invoke(app, ["escalations", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("escalations check: policies=2 ")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "bad.yaml",
            "policies:\n  - {name: p, tiers: [{name: a, timeout_s: 60}, {name: b, timeout_s: 0}]}\n",
            "policies[0].tiers[1].timeout_s: Input should be greater than 0",
        ),
        ("bad.toml", '[[policies]]\nname = "a"\ntiers = \n', "TOML syntax error: Invalid value (at line 3, column 9)"),
        ("missing.yaml", None, "missing.yaml: no such file"),
    ],
)
def test_check_a_bad_file(runner: CliRunner, tmp_path: Path, name: str, text: str | None, expected: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
        path.chmod(0o600)
    result = runner.invoke(escalations_app, ["check", str(path)])
    assert result.exit_code == 1
    assert expected in result.stderr
    assert result.stderr.startswith(f"{path}: ")
    assert "escalations check:" not in result.stdout
