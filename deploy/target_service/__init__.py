"""The demo target service: a small real HTTP service that scenarios and `make demo` break on purpose.

`python -m deploy.target_service`, configured by `OPSWARM_TARGET_*` variables (settings.py). Faults are injected
over HTTP (app.py, faults.py); Prometheus scrapes its /metrics (metrics.py).
"""
