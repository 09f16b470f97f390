"""Escalation policies: the file (YAML or TOML) and its validation, policy selection, the tier schedule, the step
ids durable timers use, and the four-eyes threshold."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from scheduler.escalations.notifications import EmailChannelConfig, PagerDutyChannelConfig, SlackChannelConfig
from scheduler.escalations.policies import (
    DEFAULT_POLICY,
    EscalationPolicies,
    EscalationPolicy,
    EscalationStep,
    PolicyFileError,
    Tier,
    escalation_steps,
    four_eyes_needed,
    load_policies,
    step_id,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "escalations.example.yaml"

# The example file, in TOML.
EXAMPLE_TOML = """
[channels.ops-slack]
type = "slack"
webhook_url = "http://127.0.0.1:9/fake-slack-webhook/T000/B000/not-a-real-token"
retry = {attempts = 3, backoff_s = 0.5}

[channels.ops-email]
type = "email"
host = "127.0.0.1"
port = 2525
sender = "opswarm@example.invalid"
starttls = false
username = "opswarm"
password = "fake-smtp-password"

[channels.pagerduty]
type = "pagerduty"
routing_key = "fake-routing-key-00000000000000"
url = "http://127.0.0.1:9/fake-pagerduty/v2/enqueue"

[[policies]]
name = "prod-urgent"
match = {services = ["prod-*", "checkout", "payments"], severities = ["critical", "high"]}
on_final_timeout = "deny"
four_eyes_min_score = 0.6
requester_may_approve = false

[[policies.tiers]]
name = "on-call"
recipients = ["oncall@example.invalid", "@oncall"]
channels = ["ops-slack", "pagerduty"]
timeout_s = 300
remind_every_s = 120

[[policies.tiers]]
name = "secondary"
recipients = ["secondary@example.invalid"]
channels = ["ops-slack", "ops-email", "pagerduty"]
timeout_s = 600
remind_every_s = 300

[[policies.tiers]]
name = "incident-commander"
recipients = ["ic@example.invalid"]
channels = ["ops-email", "pagerduty"]
timeout_s = 900

[[policies]]
name = "catch-all"
match = {services = ["*"]}
on_final_timeout = "keep_waiting"
tiers = [
  {name = "team", recipients = ["@ops-team"], channels = ["ops-slack"], timeout_s = 1800, remind_every_s = 900},
  {name = "team-leads", recipients = ["leads@example.invalid"], channels = ["ops-email"], timeout_s = 3600},
]

[default]
name = "default"
tiers = [{name = "on-call", timeout_s = 900, remind_every_s = 300}]
"""


def _write(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def _policies(*policies: dict[str, Any], **extra: Any) -> EscalationPolicies:
    return EscalationPolicies.model_validate({"policies": list(policies), **extra})


def _tier(name: str = "t", **fields: Any) -> dict[str, Any]:
    return {"name": name, "timeout_s": 60, **fields}


# --- the file ---------------------------------------------------------------------------------------------------


def test_example_file_loads() -> None:
    policies = load_policies(EXAMPLE)
    assert [p.name for p in policies.policies] == ["prod-urgent", "catch-all"]
    assert {name: type(c) for name, c in policies.channels.items()} == {
        "ops-slack": SlackChannelConfig,
        "ops-email": EmailChannelConfig,
        "pagerduty": PagerDutyChannelConfig,
    }
    urgent = policies.policies[0]
    assert [t.name for t in urgent.tiers] == ["on-call", "secondary", "incident-commander"]
    assert [t.timeout_s for t in urgent.tiers] == [300, 600, 900]
    assert urgent.match.severities == ["critical", "high"]
    assert urgent.four_eyes_min_score == 0.6
    assert policies.policies[1].on_final_timeout == "keep_waiting"
    assert policies.default == DEFAULT_POLICY
    # Secrets stay secret, and every URL of the example is a loopback one.
    pager = policies.channels["pagerduty"]
    assert isinstance(pager, PagerDutyChannelConfig) and isinstance(pager.routing_key, SecretStr)
    assert "fake-routing-key" not in repr(policies)
    assert pager.url.startswith("http://127.0.0.1:")


def test_yaml_and_toml_are_equal(tmp_path: Path) -> None:
    from_toml = load_policies(_write(tmp_path, "policies.toml", EXAMPLE_TOML))
    from_yaml = load_policies(_write(tmp_path, "policies.yml", EXAMPLE.read_text()))
    assert from_toml == from_yaml == load_policies(EXAMPLE)
    slack = from_toml.channels["ops-slack"]
    assert isinstance(slack, SlackChannelConfig) and slack.retry.attempts == 3


_GOOD_CHANNELS = """
channels:
  ops-slack: {type: slack, webhook_url: "http://127.0.0.1:9/hook"}
  ops-email: {type: email, host: 127.0.0.1, sender: a@example.invalid}
"""


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        pytest.param(
            "p.yaml",
            _GOOD_CHANNELS + "policies:\n  - {name: prod, tiers: [{name: on-call, timeout_s: 60, channels: [pager]}]}",
            ["policy 'prod', tier 'on-call': unknown channel 'pager' (known channels: ops-email, ops-slack)"],
            id="unknown-channel",
        ),
        pytest.param(
            "p.yaml",
            "policies:\n  - {name: p, tiers: [{name: a, timeout_s: 60}, {name: b, timeout_s: 0}]}",
            ["(1 problem):", "policies[0].tiers[1].timeout_s: Input should be greater than 0"],
            id="zero-timeout",
        ),
        pytest.param(
            "p.yaml",
            "policies:\n  - {name: p, tiers: [{name: a, timout_s: 60}]}",
            [
                "(2 problems):",
                "policies[0].tiers[0].timout_s: Extra inputs are not permitted",
                "policies[0].tiers[0].timeout_s: Field required",
            ],
            id="typo-key",
        ),
        pytest.param(
            "p.yaml",
            "policies:\n  - {name: p, match: {severities: [critical, urgent]}, tiers: [{name: a, timeout_s: 60}]}",
            ["policies[0].match.severities[1]: Input should be 'critical', 'high', 'warning' or 'info'"],
            id="bad-severity",
        ),
        pytest.param(
            "p.yaml",
            "policies:\n  - name: a\n   tiers: []\n",
            ["YAML syntax error at line 3, column 4", "expected <block end>"],
            id="yaml-syntax",
        ),
        pytest.param(
            "p.toml",
            '[[policies]]\nname = "a"\ntiers = \n',
            ["TOML syntax error", "line 3, column 9"],
            id="toml-syntax",
        ),
        pytest.param("p.json", "{}", ["unknown extension '.json'", ".yaml, .yml, .toml"], id="unknown-extension"),
        pytest.param("p.yaml", "# nothing yet\n", ["the file is empty"], id="empty-yaml"),
        pytest.param("p.toml", "", ["the file is empty"], id="empty-toml"),
        pytest.param("p.yaml", "- a\n- b\n", ["the top level must be a mapping"], id="not-a-mapping"),
        pytest.param(
            "p.yaml",
            "policies:\n" + "  - {name: p, tiers: [{name: a, timeout_s: 1}]}\n" * 2,
            ["policy names must be unique, repeated: p"],
            id="duplicate-policy",
        ),
        pytest.param(
            "p.yaml",
            "policies:\n  - {name: p, tiers: [{name: a, timeout_s: 1}, {name: a, timeout_s: 1}]}",
            ["policies[0]: policy 'p': tier names must be unique, repeated: a"],
            id="duplicate-tier",
        ),
        pytest.param(
            "p.yaml",
            "policies:\n  - {name: p, tiers: []}",
            ["policies[0].tiers: List should have at least 1 item"],
            id="no-tiers",
        ),
        pytest.param(
            "p.yaml",
            "policies:\n  - {name: p, tiers: [{name: a, timeout_s: 60, remind_every_s: -5}]}",
            ["policies[0].tiers[0].remind_every_s: Input should be greater than 0"],
            id="negative-reminder",
        ),
        pytest.param(
            "p.yaml",
            "channels:\n  pager: {type: pagerduty}\n  hook: {type: sms, url: x}",
            ["channels.pager.routing_key: Field required", "channels.hook: Input tag 'sms' found using 'type'"],
            id="bad-channels",
        ),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(PolicyFileError) as caught:
        load_policies(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in expected:
        assert fragment in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match=r"nope\.yaml: no such file$"):
        load_policies(tmp_path / "nope.yaml")


def test_problems_never_echo_the_input(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", "channels:\n  hook: {type: webhook, url: ftp://s3cr3t-host, secret: s3cr3t-key}")
    with pytest.raises(PolicyFileError, match=r"channels\.hook\.url: String should match pattern") as caught:
        load_policies(path)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True), (0o604, True)])
def test_warns_when_others_can_read_the_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, warned: bool
) -> None:
    path = _write(tmp_path, "p.yaml", "policies: []\nchannels: {}\n", mode=mode)
    with caplog.at_level(logging.WARNING, logger="scheduler.escalations.policies"):
        load_policies(path)
    records = [r for r in caplog.records if r.name == "scheduler.escalations.policies"]
    assert bool(records) is warned
    if warned:
        assert records[0].getMessage() == "escalation policy file readable by group or others"
        assert records[0].__dict__["path"] == str(path)


def test_models_are_frozen_and_default_is_built_in() -> None:
    policies = EscalationPolicies()
    assert policies.default.name == "default"
    [tier] = policies.default.tiers
    assert (tier.name, tier.timeout_s, tier.remind_every_s) == ("on-call", 900, 300)
    assert tier.recipients == [] and tier.channels == []
    assert policies.default.on_final_timeout == "deny"
    with pytest.raises(ValidationError):
        tier.timeout_s = 1  # type: ignore[misc]


def test_default_channels_are_checked_too() -> None:
    with pytest.raises(ValidationError, match="policy 'default', tier 'x': unknown channel 'slack'"):
        EscalationPolicies.model_validate({"default": {"name": "default", "tiers": [_tier("x", channels=["slack"])]}})


# --- selection --------------------------------------------------------------------------------------------------

_SELECTION = _policies(
    {
        "name": "db-critical",
        "match": {"services": ["db-*", "*-postgres"], "severities": ["critical"]},
        "tiers": [_tier()],
    },
    {"name": "checkout", "match": {"services": ["checkout"]}, "tiers": [_tier()]},
    {"name": "all-critical", "match": {"severities": ["critical", "high"]}, "tiers": [_tier()]},
    {"name": "db-any", "match": {"services": ["db-*"]}, "tiers": [_tier()]},
)


@pytest.mark.parametrize(
    ("service", "severity", "expected"),
    [
        ("db-orders", "critical", "db-critical"),
        ("orders-postgres", "critical", "db-critical"),
        ("db-orders", "high", "all-critical"),  # severity does not match the first: the next that accepts both
        ("db-orders", "warning", "db-any"),
        ("checkout", "critical", "checkout"),  # first match wins over all-critical
        ("checkout", "info", "checkout"),
        ("search", "high", "all-critical"),
        ("search", "warning", "default"),
        ("DB-orders", "warning", "default"),  # globs are case-sensitive
        ("db-orders", "disaster", "default"),  # not a known severity: no policy accepts it
    ],
)
def test_policy_selection(service: str, severity: str, expected: str) -> None:
    assert _SELECTION.policy_for(service, severity).name == expected


# --- the schedule -----------------------------------------------------------------------------------------------


def _policy(*tiers: tuple[float, float | None]) -> EscalationPolicy:
    return EscalationPolicy(
        name="p", tiers=[Tier(name=f"t{i}", timeout_s=t, remind_every_s=r) for i, (t, r) in enumerate(tiers)]
    )


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        pytest.param(
            [(300, 120), (600, 300), (900, None)],
            [
                ("notify", 0, 1000, 0),
                ("remind", 0, 1120, 1),
                ("remind", 0, 1240, 2),
                ("notify", 1, 1300, 0),
                ("remind", 1, 1600, 1),  # 1900 would be the tier's end: not a reminder
                ("notify", 2, 1900, 0),
                ("expire", 2, 2800, 0),
            ],
            id="three-tiers-with-reminders",
        ),
        pytest.param(
            [(60, None), (120, None)],
            [("notify", 0, 1000, 0), ("notify", 1, 1060, 0), ("expire", 1, 1180, 0)],
            id="no-reminders",
        ),
        pytest.param(
            [(100, 500), (50, 50)],
            [("notify", 0, 1000, 0), ("notify", 1, 1100, 0), ("expire", 1, 1150, 0)],
            id="reminder-longer-than-tier",
        ),
        pytest.param(
            [(900, 300)],
            [("notify", 0, 1000, 0), ("remind", 0, 1300, 1), ("remind", 0, 1600, 2), ("expire", 0, 1900, 0)],
            id="default-policy-shape",
        ),
    ],
)
def test_escalation_steps(tiers: list[tuple[float, float | None]], expected: list[tuple[str, int, float, int]]) -> None:
    steps = escalation_steps(_policy(*tiers), started_at=1000.0)
    assert [(s.kind, s.tier, s.at, s.reminder) for s in steps] == expected


def test_reminder_times_do_not_drift() -> None:
    started = 1_760_000_000.123
    steps = escalation_steps(_policy((1.0, 0.1)), started_at=started)
    reminders = [s for s in steps if s.kind == "remind"]
    assert [s.reminder for s in reminders] == list(range(1, 10))
    assert all(s.at == started + s.reminder * 0.1 for s in reminders)
    assert [s.at for s in steps] == sorted(s.at for s in steps)


def test_step_ids_are_stable_and_distinct() -> None:
    policy = _policy((300, 120), (600, 300), (900, None))
    first = [step_id("inc-1", "act-1", s) for s in escalation_steps(policy, 1000.0)]
    # Another start (a restart recomputing the schedule later) gives the same ids: one durable timer per step.
    assert [step_id("inc-1", "act-1", s) for s in escalation_steps(policy, 5000.0)] == first
    assert len(set(first)) == len(first) == 7
    assert first[0] == "esc:inc-1:act-1:notify:0:0"
    assert "esc:inc-1:act-1:remind:0:2" in first and first[-1] == "esc:inc-1:act-1:expire:2:0"
    others = {step_id("inc-2", "act-1", s) for s in escalation_steps(policy, 1000.0)}
    others |= {step_id("inc-1", None, s) for s in escalation_steps(policy, 1000.0)}
    assert not others & set(first)
    assert step_id("inc-1", None, EscalationStep("notify", 0, 0.0)) == "esc:inc-1:none:notify:0:0"


# --- four eyes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "score", "needed"),
    [(0.7, 0.69, False), (0.7, 0.7, True), (0.7, 1.0, True), (None, 1.0, False), (0.0, 0.0, True)],
)
def test_four_eyes_threshold(threshold: float | None, score: float, needed: bool) -> None:
    policy = EscalationPolicy(name="p", tiers=[Tier(name="a", timeout_s=1)], four_eyes_min_score=threshold)
    assert four_eyes_needed(policy, score) is needed


def test_four_eyes_default_and_range() -> None:
    assert DEFAULT_POLICY.four_eyes_min_score == 0.7 and DEFAULT_POLICY.requester_may_approve is False
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        EscalationPolicy(name="p", tiers=[Tier(name="a", timeout_s=1)], four_eyes_min_score=1.5)
