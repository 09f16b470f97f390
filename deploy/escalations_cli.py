"""`opswarm escalations check PATH`: load an escalation policy file and show what it says.

Prints one row per policy (the default last, shown but not counted): its match, its tiers with their timeouts,
reminders, channels and number of recipients, what happens when the last tier times out and the four-eyes
threshold. The last line is `escalations check: policies=N channels=N tiers=N` (the file's policies, its channels
and their tiers). An invalid file: exit 1, the problems on stderr. Secrets are never printed.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from scheduler.escalations.policies import EscalationPolicies, EscalationPolicy, PolicyFileError, load_policies

escalations_app = typer.Typer(no_args_is_help=True, help="Escalation policies: who is asked, through what, how long.")
console = Console(highlight=False)


@escalations_app.callback()
def _group() -> None:
    """Escalation policies: who is asked, through what, how long."""


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _tiers(policy: EscalationPolicy) -> str:
    lines = []
    for index, tier in enumerate(policy.tiers):
        remind = f", remind every {_seconds(tier.remind_every_s)}" if tier.remind_every_s else ""
        channels = ", ".join(tier.channels) or "approvals page only"
        lines.append(
            f"{index + 1}. {tier.name}: {_seconds(tier.timeout_s)}{remind}; {channels}; "
            f"{len(tier.recipients)} recipient{'' if len(tier.recipients) == 1 else 's'}"
        )
    return "\n".join(lines)


def policies_table(policies: EscalationPolicies, title: str) -> Table:
    table = Table(title=title, show_lines=True)
    for column in ("policy", "match", "tiers", "final timeout", "four eyes"):
        table.add_column(column, overflow="fold")
    rows = [(policy, policy.name) for policy in policies.policies]
    rows.append((policies.default, f"{policies.default.name} (default)"))
    for policy, name in rows:
        match = f"services: {', '.join(policy.match.services)}\nseverities: {', '.join(policy.match.severities)}"
        four_eyes = "never" if policy.four_eyes_min_score is None else f"score ≥ {policy.four_eyes_min_score:g}"
        if policy.requester_may_approve:
            four_eyes += "\nrequester may approve"
        final = f"{policy.on_final_timeout} after {_seconds(policy.total_timeout_s)}"
        table.add_row(name, match, _tiers(policy), final, four_eyes)
    return table


def summary_line(policies: EscalationPolicies) -> str:
    tiers = sum(len(policy.tiers) for policy in policies.policies)
    return f"escalations check: policies={len(policies.policies)} channels={len(policies.channels)} tiers={tiers}"


@escalations_app.command()
def check(path: Path = typer.Argument(..., help="The policy file (.yaml, .yml or .toml).")) -> None:
    """Load and validate a policy file; exit 1 with its problems when it is invalid."""
    try:
        policies = load_policies(path)
    except PolicyFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    console.print(policies_table(policies, f"escalation policies ({path})"))
    console.print(summary_line(policies), soft_wrap=True)
