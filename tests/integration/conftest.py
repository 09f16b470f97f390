"""Fixtures for tests on real services."""

from __future__ import annotations

import pytest

from bus.config import KafkaConfig


@pytest.fixture(scope="session")
def kafka_config(services) -> KafkaConfig:  # noqa: ANN001 - `services` comes from tests/conftest.py
    return KafkaConfig(bootstrap_servers=services.kafka_bootstrap, connect_timeout_s=30)
