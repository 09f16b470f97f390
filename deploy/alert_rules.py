"""Prometheus alerting rules for the demo target services (deploy/target_service), in one generic rule file.

`opswarm up` writes `<state_dir>/prometheus/rules/opswarm-demo-targets.yml` (deploy/localstack/prometheus_server.py),
one group that covers every target of the job `opswarm-targets` (whatever `deploy.prometheus_targets
.register_target` registered), so a scenario's uniquely named service needs no file of its own: each alert is
per `service` (the demo service's own label, and the target file's). Prometheus evaluates the group every second
and sends firing and resolved alerts to the stack's Alertmanager, which forwards them to the bridge.

The alert names and labels are the ones the diagnosis playbook keys on (agents/diagnosis/default_rules.py):

| alert | condition (per service) | for | severity | playbook rule |
|-------|--------------------------|-----|----------|---------------|
| ServiceDown | a scrape fails: `min(up) == 0` | 2s | critical | service-down |
| HighErrorRate | 5xx (not 503) / requests over 5 s, live release, > 5 % | 1s | critical | error-rate(-after-deploy) |
| HighLatency | p99 of the request duration over 5 s, live release, > 1 s | 1s | warning | high-latency |
| ConnectionPoolExhausted | pool in use / pool size >= 1 | 0s | critical | connection-pool-exhausted |
| DiskFull | data dir bytes >= 90 % of its (simulated) capacity | 0s | warning | disk-full |
| DatabaseCorruption | the data store reports corruption | 0s | critical | database-corruption |

HighErrorRate leaves out 503, the answer of an exhausted pool: that is ConnectionPoolExhausted's alert (whose remedy
is a flush, not a restart or a rollback), and a lingering 503 rate after the flush must not raise a second alert.
ServiceDown waits 2 s (three failed scrapes in a row) so that a deliberate restart (restart_process, a rollback: the
demo service answers nothing for under half a second) does not page; a crash stays down and fires. Rates use 5 s
windows (five 1 s scrapes): fast to fire and to clear; "live release" means the rates are joined with
`demo_build_info` as the playbook does, so the replaced release's last samples do not keep an alert firing after a
rollback.

Labels on every alert: `service`, `env` (from the target file's labels, e.g. `env=staging` for the scenarios;
absent when the target has none, and coordination then assumes prod), `severity`, `process` (the target's own
`process` label if it has one, else `<service>.0`: replica 0 on the local deployment platform, what
restart_process acts on) and `verify_window_s=5` (the demo checks a fix 5 s after it). HighErrorRate and
HighLatency carry their thresholds (`error_ratio_threshold`, `latency_threshold_s`), DiskFull the playbook's
`path` (`<state_dir>/scenarios/<service>`, where the scenarios put a target's data dir), `min_age_s` and
`threshold_bytes` (the alert's value). Annotations: `summary`, `description` and `runbook_url`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.settings import CHECKOUT_DIR, Settings

log = logging.getLogger(__name__)

RULE_FILE = "opswarm-demo-targets.yml"
GROUP = "opswarm-demo-targets"
# The job of the stack Prometheus's file-based discovery, i.e. the registered (demo) targets.
TARGETS_JOB = "opswarm-targets"
VERIFY_WINDOW_S = "5"
ERROR_RATIO_THRESHOLD = "0.05"
LATENCY_THRESHOLD_S = "1"
DISK_FULL_RATIO = "0.9"
MIN_AGE_S = "3600"
RATE_WINDOW = "5s"
# Each alert's runbook, seeded into the knowledge base by `opswarm demo` (`opswarm kb ingest` of this directory).
RUNBOOKS_DIR = CHECKOUT_DIR / "deploy" / "demo" / "runbooks"
_RELOAD_TIMEOUT_S = 10.0

# Targets registered with `alerts="self"` (the scenarios, which fire their own alerts) are left out.
_SELECT = f'job="{TARGETS_JOB}", alerts!="self"'
_BY = "service, env, process"
_LIVE = f"and on(service, version) demo_build_info{{{_SELECT}}}"
# A target's own `process` label wins; else replica 0 of the service on the local deployment platform.
_PROCESS = "{{ if $labels.process }}{{ $labels.process }}{{ else }}{{ $labels.service }}.0{{ end }}"


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule of the group; `labels` are added to the common ones."""

    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)
    runbook: str = ""  # its file in RUNBOOKS_DIR

    @property
    def runbook_url(self) -> str:
        return (RUNBOOKS_DIR / self.runbook).as_uri()

    def as_rule(self) -> dict[str, object]:
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {
                "severity": self.severity,
                "process": _PROCESS,
                "verify_window_s": VERIFY_WINDOW_S,
                **self.labels,
            },
            "annotations": {"summary": self.summary, "description": self.description, "runbook_url": self.runbook_url},
        }


def _live_rate(selector: str, by: str = _BY) -> str:
    """The per-service rate of `selector`'s series, the live release's only."""
    return f"sum by ({by}) (rate({selector}[{RATE_WINDOW}]) {_LIVE})"


def demo_target_rules(settings: Settings) -> list[AlertRule]:
    """The rules, in the order Prometheus evaluates them."""
    buckets = _live_rate(f"demo_request_duration_seconds_bucket{{{_SELECT}}}", by=f"{_BY}, le")
    latency_p99 = f"histogram_quantile(0.99, {buckets})"
    disk_threshold = f"max by ({_BY}) (demo_disk_capacity_bytes{{{_SELECT}}}) * {DISK_FULL_RATIO}"
    errors = _live_rate(f'demo_requests_total{{{_SELECT}, code=~"5..", code!="503"}}')
    requests = _live_rate(f"demo_requests_total{{{_SELECT}}}")
    return [
        AlertRule(
            alert="ServiceDown",
            runbook="service-down.md",
            expr=f'min by ({_BY}) (up{{{_SELECT}, service!=""}}) == 0',
            for_="2s",
            severity="critical",
            summary="{{ $labels.service }} is down",
            description="Prometheus has failed to scrape {{ $labels.service }} for 2 s: its process is not "
            "running or not answering.",
        ),
        AlertRule(
            alert="ConnectionPoolExhausted",
            runbook="connection-pool-exhausted.md",
            expr=f"max by ({_BY}) (demo_pool_in_use{{{_SELECT}}} / demo_pool_size{{{_SELECT}}}) >= 1",
            for_="0s",
            severity="critical",
            summary="{{ $labels.service }} has no free pooled connection",
            description="Every connection of {{ $labels.service }}'s pool is taken (in use or leaked): requests "
            "are answered 503.",
        ),
        AlertRule(
            alert="HighErrorRate",
            runbook="high-error-rate.md",
            expr=f"{errors} / {requests} > {ERROR_RATIO_THRESHOLD}",
            for_="1s",
            severity="critical",
            summary="{{ $labels.service }} answers {{ $value | humanizePercentage }} of its requests with errors",
            description=f"The ratio of 5xx answers (503 aside) of {{{{ $labels.service }}}} over {RATE_WINDOW} is "
            f"above {ERROR_RATIO_THRESHOLD}.",
            labels={"error_ratio_threshold": ERROR_RATIO_THRESHOLD},
        ),
        AlertRule(
            alert="HighLatency",
            runbook="high-latency.md",
            expr=f"{latency_p99} > {LATENCY_THRESHOLD_S}",
            for_="1s",
            severity="warning",
            summary="{{ $labels.service }} answers slowly: p99 {{ $value | humanizeDuration }}",
            description=f"The 99th percentile of {{{{ $labels.service }}}}'s request duration over {RATE_WINDOW} "
            f"is above {LATENCY_THRESHOLD_S} s.",
            labels={"latency_threshold_s": LATENCY_THRESHOLD_S},
        ),
        AlertRule(
            alert="DiskFull",
            runbook="disk-full.md",
            # The value is the threshold (the left side of a filtering comparison): it becomes threshold_bytes.
            expr=f"{disk_threshold} <= max by ({_BY}) (demo_disk_used_bytes{{{_SELECT}}})",
            for_="0s",
            severity="warning",
            summary="{{ $labels.service }}'s disk is above {{ $value | humanize1024 }}B",
            description=f"The data dir of {{{{ $labels.service }}}} holds at least {DISK_FULL_RATIO} of its "
            "capacity.",
            labels={
                "path": f"{settings.scenarios_dir()}{os.sep}{{{{ $labels.service }}}}",
                "min_age_s": MIN_AGE_S,
                "threshold_bytes": '{{ printf "%.0f" $value }}',
            },
        ),
        AlertRule(
            alert="DatabaseCorruption",
            runbook="database-corruption.md",
            expr=f"max by ({_BY}) (demo_data_corruption{{{_SELECT}}}) > 0",
            for_="0s",
            severity="critical",
            summary="{{ $labels.service }}'s data store reports corrupt data",
            description="The checksums of a table of {{ $labels.service }}'s data store do not match.",
        ),
    ]


def render(settings: Settings) -> str:
    """The rule file's content: one group, in JSON (valid YAML) behind a comment line."""
    group = {"name": GROUP, "rules": [rule.as_rule() for rule in demo_target_rules(settings)]}
    header = "# Generated by `opswarm up` (deploy/alert_rules.py) from the settings; edits are overwritten.\n"
    return header + json.dumps({"groups": [group]}, indent=2) + "\n"


def write_rule_file(rules_dir: Path, settings: Settings) -> bool:
    """Write the rule file into `rules_dir` atomically (Prometheus never loads half a file); False when it already
    had this content."""
    path = rules_dir / RULE_FILE
    content = render(settings)
    try:
        if path.read_text() == content:
            return False
    except FileNotFoundError:
        pass
    rules_dir.mkdir(parents=True, exist_ok=True)
    # Not *.yml: a reload in between never sees the partial file.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(content)
    os.replace(partial, path)
    log.info("alert rules written", extra={"path": str(path)})
    return True


async def reload_prometheus(prometheus_url: str, timeout_s: float = _RELOAD_TIMEOUT_S) -> None:
    """`POST /-/reload` (Prometheus runs with --web.enable-lifecycle): it re-reads its config and rule files.
    Raises httpx.HTTPStatusError with Prometheus's reason when the new config or rules do not load."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        response = await client.post(f"{prometheus_url}/-/reload")
    if response.is_error:
        raise httpx.HTTPStatusError(
            f"Prometheus refused the reload ({response.status_code}): {response.text.strip()}",
            request=response.request,
            response=response,
        )
