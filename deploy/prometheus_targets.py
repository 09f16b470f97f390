"""What the local stack's Prometheus scrapes, for scenarios: target files for its file-based discovery, and a wait
until a query answers.

`register_target` writes `<state_dir>/prometheus/targets/<name>.json` (one target, its labels) atomically, so
Prometheus never reads half a file; it picks the file up within a second (job `opswarm-targets`).
`unregister_target` removes it; `wait_target_dropped` waits until Prometheus has let go of it (to stop a service
without its scrape failing, and ServiceDown firing, in between). `wait_for_series` polls an instant query until it
returns a sample.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import httpx

from deploy.localstack.prometheus_server import targets_dir
from execution.prometheus_queries import PrometheusQueries, QueryResult

log = logging.getLogger(__name__)

_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POLL_INTERVAL_S = 0.25


def target_file(state_dir: Path, name: str) -> Path:
    if not _TARGET_NAME.match(name):
        raise ValueError(f"invalid target name {name!r}: letters, digits, '_', '.', '-' (at most 64)")
    return targets_dir(state_dir) / f"{name}.json"


def register_target(state_dir: Path, name: str, address: str, labels: Mapping[str, str] | None = None) -> Path:
    """Make Prometheus scrape `address` (`host:port`, path /metrics) with `labels`; replaces a target of that name.

    The target's own labels (e.g. the demo service's `service` and `version`) win over `labels` on conflict.
    Returns the target file.
    """
    path = target_file(state_dir, name)
    if not _ADDRESS.match(address):
        raise ValueError(f"invalid target address {address!r}: want host:port")
    labels = dict(labels or {})
    for label in labels:
        if not _LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(f"invalid label name {label!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name that does not end in .json: discovery never sees the half-written file.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps([{"targets": [address], "labels": labels}], indent=2) + "\n")
    os.replace(partial, path)
    log.info("prometheus target registered", extra={"target": name, "address": address, "labels": labels})
    return path


def unregister_target(state_dir: Path, name: str) -> bool:
    """Stop scraping the target `name`; False if there was no such target."""
    try:
        target_file(state_dir, name).unlink()
    except FileNotFoundError:
        return False
    log.info("prometheus target unregistered", extra={"target": name})
    return True


async def wait_for_series(prometheus_url: str, query: str, timeout_s: float) -> QueryResult:
    """Poll the instant `query` until it returns at least one sample; that result. TimeoutError after `timeout_s`,
    saying what the last answer was (empty, or Prometheus's error)."""
    queries = PrometheusQueries(prometheus_url, timeout_s=min(5.0, timeout_s))
    last: QueryResult | None = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                last = await queries.instant(query)
                if last.status == "ok":
                    return last
                await asyncio.sleep(_POLL_INTERVAL_S)
    except TimeoutError:
        seen = "no answer" if last is None else last.error or last.status
        raise TimeoutError(f"{query} returned no sample within {timeout_s:g}s (last: {seen})") from None
    finally:
        await queries.aclose()


async def wait_target_dropped(prometheus_url: str, service: str, timeout_s: float) -> bool:
    """Poll Prometheus's active targets until none has the label service=`service`; False after `timeout_s`."""
    try:
        async with httpx.AsyncClient(timeout=min(5.0, timeout_s)) as client, asyncio.timeout(timeout_s):
            while True:
                try:
                    response = await client.get(f"{prometheus_url}/api/v1/targets", params={"state": "active"})
                    active = response.json()["data"]["activeTargets"] if response.is_success else None
                except (httpx.HTTPError, ValueError, KeyError):
                    active = None
                if active is not None and not any(t.get("labels", {}).get("service") == service for t in active):
                    return True
                await asyncio.sleep(_POLL_INTERVAL_S)
    except TimeoutError:
        log.warning("prometheus still scrapes the target", extra={"service": service, "timeout_s": timeout_s})
        return False
