"""The playbook's standard rules (a playbook file may replace them by name or add its own before them).

Metrics the rules read, as the demo target service (deploy/target_service) exposes them: `up` (Prometheus's own,
with the target's `service` label), `demo_disk_used_bytes`, `demo_requests_total` and
`demo_request_errors_total`, `demo_request_duration_seconds_bucket`, `demo_pool_in_use` and `demo_pool_size`,
`demo_data_corruption`. Rates use `irate` (the last two samples): a verification a few seconds after the fix
must see the service as it is now, not a minute's average. Labels an alert may carry to steer a rule: `process`
(what to restart; the service by default), `path`, `min_age_s` and `threshold_bytes` (disk),
`error_ratio_threshold`, `latency_threshold_s`, `pool`, `db`, and `verify_window_s` (how long after the fix to
check it).
"""

from __future__ import annotations

from agents.diagnosis.playbook import MetricProbe, Playbook, PlaybookRule, StepTemplate, VerifyTemplate

UP = 'min(up{service="{service}"})'
DISK_USED = 'max(demo_disk_used_bytes{service="{service}"})'
# Only the release running now counts: a range selector still holds a replaced release's last samples for the
# whole range (staleness hides a series from instant selectors only), so the rates are joined with the
# instant `demo_build_info` of the live release.
_LIVE = ' and on(service, version) demo_build_info{service="{service}"}'
ERROR_RATIO = (
    f'sum(irate(demo_request_errors_total{{service="{{service}}"}}[1m]){_LIVE})'
    f' / sum(irate(demo_requests_total{{service="{{service}}"}}[1m]){_LIVE})'
)
LATENCY_P99 = (
    'histogram_quantile(0.99, sum by (le) (irate(demo_request_duration_seconds_bucket{service="{service}"}[1m])))'
)
POOL_USE = 'max(demo_pool_in_use{service="{service}"} / demo_pool_size{service="{service}"})'
CORRUPTION = 'max(demo_data_corruption{service="{service}"})'

_WINDOW = "{labels[verify_window_s]}"
_RESTART = StepTemplate(action="restart_process", target="{labels[process]}")
_UP_PROBE = MetricProbe(name="up", query=UP, comparator="<", threshold=1)
_UP_AGAIN = VerifyTemplate(query=UP, comparator=">=", threshold=1, window_s=_WINDOW)
_DISK_THRESHOLD = "{labels[threshold_bytes]}"
_LATENCY_THRESHOLD = "{labels[latency_threshold_s]}"
_ERROR_THRESHOLD = "{labels[error_ratio_threshold]}"
_ERROR_PROBE = MetricProbe(name="error_ratio", query=ERROR_RATIO, comparator=">", threshold=_ERROR_THRESHOLD)
_ERRORS_LOW = VerifyTemplate(query=ERROR_RATIO, comparator="<", threshold=_ERROR_THRESHOLD, window_s=_WINDOW)
_ERROR_DEFAULTS = {"error_ratio_threshold": "0.05", "verify_window_s": "60", "process": "{service}"}

DEFAULT_RULES: list[PlaybookRule] = [
    PlaybookRule(
        name="service-down",
        alertnames=["ServiceDown", "TargetDown"],
        label_defaults={"process": "{service}", "verify_window_s": "10"},
        hypothesis="{service} is down: process {labels[process]} is not running or not answering its scrapes",
        confidence=0.6,
        probes=[_UP_PROBE],
        steps=[_RESTART],
        verify=_UP_AGAIN,
    ),
    PlaybookRule(
        name="disk-full",
        alertnames=["DiskFull", "DiskUsageHigh"],
        label_defaults={"min_age_s": "3600", "verify_window_s": "30"},
        hypothesis="the disk of {service} is filling up with files under {labels[path]}",
        confidence=0.6,
        probes=[MetricProbe(name="disk_used_bytes", query=DISK_USED, comparator=">=", threshold=_DISK_THRESHOLD)],
        steps=[
            StepTemplate(
                action="clear_disk",
                target="{service}",
                params={"path": "{labels[path]}", "min_age_s": "{labels[min_age_s]}"},
            )
        ],
        verify=VerifyTemplate(query=DISK_USED, comparator="<", threshold=_DISK_THRESHOLD, window_s=_WINDOW),
    ),
    PlaybookRule(
        name="error-rate-after-deploy",
        alertnames=["HighErrorRate"],
        requires_change="deploy",
        label_defaults=_ERROR_DEFAULTS,
        hypothesis="deploy {change[previous_version]}→{change[version]} of {service} raised the error rate",
        confidence=0.55,
        probes=[_ERROR_PROBE],
        steps=[StepTemplate(action="rollback_deploy", params={"to_version": "{change[previous_version]}"})],
        # No rollback of the rollback: bringing a deploy that raised errors back is a decision for a human.
        verify=_ERRORS_LOW,
    ),
    PlaybookRule(
        name="error-rate",
        alertnames=["HighErrorRate"],
        label_defaults=_ERROR_DEFAULTS,
        hypothesis="{service} answers with errors and was not deployed recently: a restart may clear a bad state",
        confidence=0.35,
        probes=[_ERROR_PROBE],
        steps=[_RESTART],
        verify=_ERRORS_LOW,
    ),
    PlaybookRule(
        name="high-latency",
        alertnames=["HighLatency"],
        label_defaults={"process": "{service}", "latency_threshold_s": "1", "verify_window_s": "60"},
        hypothesis="{service} answers slowly: process {labels[process]} is saturated or stuck; a restart may help",
        confidence=0.45,
        probes=[MetricProbe(name="latency_p99_s", query=LATENCY_P99, comparator=">", threshold=_LATENCY_THRESHOLD)],
        steps=[_RESTART],
        verify=VerifyTemplate(query=LATENCY_P99, comparator="<", threshold=_LATENCY_THRESHOLD, window_s=_WINDOW),
    ),
    PlaybookRule(
        name="health-check-failing",
        alertnames=["HealthCheckFailing"],
        label_defaults={"process": "{service}", "verify_window_s": "30"},
        hypothesis="{service} fails its health check: process {labels[process]} is unhealthy; a restart may help",
        confidence=0.45,
        probes=[_UP_PROBE],
        steps=[_RESTART],
        verify=_UP_AGAIN,
    ),
    PlaybookRule(
        name="connection-pool-exhausted",
        alertnames=["ConnectionPoolExhausted"],
        label_defaults={"verify_window_s": "30"},
        hypothesis="{service} ran out of pooled connections (leaked or stuck ones); flushing the pool frees them",
        confidence=0.6,
        probes=[MetricProbe(name="pool_in_use_ratio", query=POOL_USE, comparator=">=", threshold=1)],
        steps=[StepTemplate(action="flush_connection_pool", optional_params={"pool": "{labels[pool]}"})],
        verify=VerifyTemplate(query=POOL_USE, comparator="<", threshold=1, window_s=_WINDOW),
    ),
    PlaybookRule(
        name="database-corruption",
        alertnames=["DatabaseCorruption"],
        label_defaults={"db": "{service}"},
        hypothesis="the data of database {labels[db]} is corrupt: failing over to a replica is the remedy, by a human",
        confidence=0.5,
        probes=[MetricProbe(name="data_corruption", query=CORRUPTION, comparator=">", threshold=0)],
        steps=[StepTemplate(action="failover_database", target="{labels[db]}")],
    ),
]

DEFAULT_PLAYBOOK = Playbook(rules=DEFAULT_RULES)
