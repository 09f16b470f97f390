"""What `opswarm up` generates for alerting: the demo targets' rule file, Alertmanager's config, Prometheus's
alerting section, and the bridge token both share."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import yaml
from pydantic import SecretStr

from agents.diagnosis.default_rules import DEFAULT_RULES
from bus.bridge.settings import BridgeConfig
from deploy.alert_rules import RULE_FILE, demo_target_rules, render, write_rule_file
from deploy.localstack.alertmanager_server import alertmanager_yml
from deploy.localstack.bridge_token import ensure_token, read_token, token_file
from deploy.localstack.prometheus_server import prometheus_yml
from deploy.settings import Settings, StackSettings
from knowledge.markdown_documents import read_document

_SELECT = 'job="opswarm-targets", alerts!="self"'
_LIVE = f'and on(service, version) demo_build_info{{{_SELECT}}}'
# Labels every alert carries besides its own: from the series (service, env) or the rule (the others).
_SERIES_LABELS = {"service", "env"}
_COMMON_LABELS = {"severity", "process", "verify_window_s"}


def _settings(tmp_path: Path, **bridge: Any) -> Settings:
    return Settings(state_dir=tmp_path / "state", bridge=BridgeConfig(**bridge))


def _rules(settings: Settings) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(render(settings))
    [group] = document["groups"]
    assert group["name"] == "opswarm-demo-targets"
    return {rule["alert"]: rule for rule in group["rules"]}


@pytest.mark.parametrize(
    ("alert", "expr", "for_", "severity", "own_labels"),
    [
        ("ServiceDown", f'min by (service, env, process) (up{{{_SELECT}, service!=""}}) == 0', "2s", "critical", {}),
        (
            "ConnectionPoolExhausted",
            f"max by (service, env, process) (demo_pool_in_use{{{_SELECT}}} / demo_pool_size{{{_SELECT}}}) >= 1",
            "0s",
            "critical",
            {},
        ),
        (
            "HighErrorRate",
            f'sum by (service, env, process) (rate(demo_requests_total{{{_SELECT}, code=~"5..", code!="503"}}[5s]) '
            f"{_LIVE}) / sum by (service, env, process) (rate(demo_requests_total{{{_SELECT}}}[5s]) {_LIVE}) > 0.05",
            "1s",
            "critical",
            {"error_ratio_threshold": "0.05"},
        ),
        (
            "HighLatency",
            "histogram_quantile(0.99, sum by (service, env, process, le) "
            f"(rate(demo_request_duration_seconds_bucket{{{_SELECT}}}[5s]) {_LIVE})) > 1",
            "1s",
            "warning",
            {"latency_threshold_s": "1"},
        ),
        (
            "DiskFull",
            f"max by (service, env, process) (demo_disk_capacity_bytes{{{_SELECT}}}) * 0.9 "
            f"<= max by (service, env, process) (demo_disk_used_bytes{{{_SELECT}}})",
            "0s",
            "warning",
            {"min_age_s": "3600", "threshold_bytes": '{{ printf "%.0f" $value }}'},
        ),
        ("DatabaseCorruption", f"max by (service, env, process) (demo_data_corruption{{{_SELECT}}}) > 0", "0s",
         "critical", {}),
    ],  # fmt: skip
)
def test_each_rule_has_its_expression_duration_and_labels(
    tmp_path: Path, alert: str, expr: str, for_: str, severity: str, own_labels: dict[str, str]
) -> None:
    settings = _settings(tmp_path)
    rule = _rules(settings)[alert]
    assert rule["expr"] == expr
    assert rule["for"] == for_
    labels = rule["labels"]
    assert labels["severity"] == severity
    assert labels["verify_window_s"] == "5"
    assert labels["process"] == (
        "{{ if $labels.process }}{{ $labels.process }}{{ else }}{{ $labels.service }}.0{{ end }}"
    )
    assert {k: v for k, v in labels.items() if k in own_labels} == own_labels
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    assert "{{ $labels.service }}" in rule["annotations"]["summary"]
    runbook = rule["annotations"]["runbook_url"]
    assert runbook.startswith("file://") and "/deploy/demo/runbooks/" in runbook
    # The runbook exists and is about this alert (its front matter names it).
    assert alert in read_document(Path(unquote(urlparse(runbook).path))).alertnames


def test_disk_full_names_the_scenarios_data_dir_of_the_service(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = _rules(settings)["DiskFull"]["labels"]["path"]
    assert path == f"{tmp_path / 'state' / 'scenarios'}/{{{{ $labels.service }}}}"


def test_the_rules_are_exactly_the_generated_ones(tmp_path: Path) -> None:
    assert list(_rules(_settings(tmp_path))) == [r.alert for r in demo_target_rules(_settings(tmp_path))]
    assert len(_rules(_settings(tmp_path))) == 6


@pytest.mark.parametrize("alert", [r.alert for r in demo_target_rules(Settings())])
def test_the_playbook_has_a_rule_for_each_alert_and_gets_every_label_it_reads(tmp_path: Path, alert: str) -> None:
    rule = _rules(_settings(tmp_path))[alert]
    playbook_rules = [r for r in DEFAULT_RULES if alert in r.alertnames]
    assert playbook_rules, f"no playbook rule for {alert}"
    for playbook_rule in playbook_rules:
        # Optional step params may name labels the alert lacks: the step then goes without them.
        required = playbook_rule.model_dump_json(exclude={"steps": {"__all__": {"optional_params"}}})
        read = set(re.findall(r"\{labels\[([a-z_]+)\]\}", required))
        provided = set(rule["labels"]) | _SERIES_LABELS | set(playbook_rule.label_defaults)
        assert read <= provided, f"{playbook_rule.name} reads {read - provided}, which {alert} does not carry"
        assert set(playbook_rule.labels) <= set(rule["labels"]) | _SERIES_LABELS
    assert _COMMON_LABELS <= set(rule["labels"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_rule_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    write_rule_file(tmp_path, settings)
    result = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / RULE_FILE)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_the_rule_file_is_written_once_and_only_rewritten_on_change(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    rules_dir = tmp_path / "rules"
    assert write_rule_file(rules_dir, settings) is True
    assert write_rule_file(rules_dir, settings) is False
    assert [p.name for p in rules_dir.iterdir()] == [RULE_FILE]
    moved = settings.model_copy(update={"state_dir": tmp_path / "elsewhere"})
    assert write_rule_file(rules_dir, moved) is True  # DiskFull's path follows the state dir
    assert (rules_dir / RULE_FILE).read_text() == render(moved)


@pytest.mark.parametrize(
    ("bridge", "url"),
    [
        ({}, "http://127.0.0.1:19096/alertmanager"),
        ({"port": 29096}, "http://127.0.0.1:29096/alertmanager"),
        ({"host": "127.0.0.2", "port": 1234, "token": SecretStr("s3cret-token")}, "http://127.0.0.2:1234/alertmanager"),
    ],
)
def test_alertmanager_sends_everything_to_the_bridge_with_the_token_file(
    tmp_path: Path, bridge: dict[str, Any], url: str
) -> None:
    settings = _settings(tmp_path, **bridge)
    ensure_token(settings)
    text = alertmanager_yml(settings)
    assert read_token(settings.state_dir) not in text
    config = yaml.safe_load(text)
    assert config["route"] == {
        "receiver": "incident-webhook",
        "group_by": ["alertname", "service"],
        "group_wait": "1s",
        "group_interval": "5s",
        "repeat_interval": "4h",
    }
    assert config["receivers"] == [
        {
            "name": "incident-webhook",
            "webhook_configs": [
                {
                    "url": url,
                    "send_resolved": True,
                    "http_config": {
                        "authorization": {"type": "Bearer", "credentials_file": str(token_file(settings.state_dir))}
                    },
                }
            ],
        }
    ]


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool (Debian package prometheus-alertmanager) missing")
def test_amtool_accepts_the_alertmanager_config(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ensure_token(settings)
    config = tmp_path / "alertmanager.yml"
    config.write_text(alertmanager_yml(settings))
    result = subprocess.run(["amtool", "check-config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("am_port", "bridge_port"), [(19095, 19096), (29095, 29096)])
def test_prometheus_alerts_the_stack_alertmanager_and_scrapes_the_bridge(
    tmp_path: Path, am_port: int, bridge_port: int
) -> None:
    settings = Settings(
        state_dir=tmp_path, stack=StackSettings(alertmanager_port=am_port), bridge=BridgeConfig(port=bridge_port)
    )
    config = yaml.safe_load(prometheus_yml(settings))
    assert config["alerting"] == {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["opswarm-bridge"]["static_configs"] == [{"targets": [f"127.0.0.1:{bridge_port}"]}]
    assert config["rule_files"] == [str(tmp_path / "prometheus" / "rules" / "*.yml")]
    assert settings.alertmanager_url() == f"http://127.0.0.1:{am_port}"


def test_a_generated_token_is_private_and_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = ensure_token(settings)
    assert path == tmp_path / "state" / "bridge" / "token"
    token = read_token(settings.state_dir)
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_token(settings) == path
    assert read_token(settings.state_dir) == token
    assert [p.name for p in path.parent.iterdir()] == ["token"]


@pytest.mark.parametrize(("configured", "kept"), [("s3cret", "s3cret"), (" padded ", "padded"), ("", None)])
def test_a_configured_token_replaces_the_file_and_an_empty_one_counts_as_none(
    tmp_path: Path, configured: str, kept: str | None
) -> None:
    ensure_token(_settings(tmp_path))
    generated = read_token(tmp_path / "state")
    path = ensure_token(_settings(tmp_path, token=SecretStr(configured)))
    assert path.read_text() == (kept if kept is not None else generated)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_reading_a_missing_token_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "bridge" / "token"))):
        read_token(tmp_path)


def test_the_stack_defaults_keep_clear_of_kafka_controller_port(tmp_path: Path) -> None:
    stack = StackSettings()
    assert stack.alertmanager_port == 19095
    assert stack.alertmanager_port != stack.kafka_controller_port
    assert stack.alertmanager == "/usr/bin/prometheus-alertmanager"
    assert BridgeConfig().port == 19096
