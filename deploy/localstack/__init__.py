"""The local stack without Docker: Kafka (KRaft), Redis, FerretDB and Prometheus as detached processes of our own.

Qdrant needs no process: the clients use qdrant-client's local path mode under the state directory.
"""

from deploy.localstack.stack import ComponentReport, UpReport, down, ensure_bus_topics, status, up

__all__ = ["ComponentReport", "UpReport", "down", "ensure_bus_topics", "status", "up"]
