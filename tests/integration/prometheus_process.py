"""A real Prometheus of a test's own (Debian's /usr/bin/prometheus), scraping one target every second."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.services import free_tcp_port

PROMETHEUS = "/usr/bin/prometheus"


@contextmanager
def prometheus_scraping(
    where: Path,
    target_port: int,
    wait_for: str,
    *,
    job: str = "test-target",
    labels: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Iterator[str]:
    """Prometheus's URL, once the query `wait_for` returns a sample from the target; stopped afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    target = {"targets": [f"127.0.0.1:{target_port}"], "labels": labels or {}}
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [{"job_name": job, "static_configs": [target]}]}
    (where / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_tcp_port()
    url = f"http://127.0.0.1:{port}"
    with (where / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [PROMETHEUS, f"--config.file={where / 'prometheus.yml'}", f"--storage.tsdb.path={where / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        _poll(lambda: has_samples(url, wait_for), f"{wait_for} in Prometheus ({where / 'prometheus.log'})", timeout_s)
        yield url
    finally:
        server.terminate()
        server.wait(15)


def has_samples(url: str, query: str) -> bool:
    try:
        body = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    return body.get("status") == "success" and bool(body["data"]["result"])


def _poll(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true within {timeout_s}s")
        time.sleep(0.1)
