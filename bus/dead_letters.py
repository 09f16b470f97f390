"""The dead-letter format: the original record's key and value, byte for byte, with why and where in headers.

Keeping the value untouched means a dead letter can be inspected with any Kafka tool and replayed as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "opswarm.dlq."
_MAX_REASON = 2000


@dataclass(frozen=True)
class DeadLetter:
    """A poison record as it sits on the dead-letter topic."""

    reason: str
    error_type: str
    source_topic: str
    source_partition: int
    source_offset: int
    consumer_group: str
    attempts: int
    failed_at: datetime
    key: bytes | None
    value: bytes | None
    original_headers: tuple[tuple[str, bytes], ...] = ()

    def headers(self) -> list[tuple[str, bytes]]:
        meta = {
            "reason": self.reason[:_MAX_REASON],
            "error_type": self.error_type,
            "source.topic": self.source_topic,
            "source.partition": str(self.source_partition),
            "source.offset": str(self.source_offset),
            "consumer_group": self.consumer_group,
            "attempts": str(self.attempts),
            "failed_at": self.failed_at.isoformat(),
        }
        return [(PREFIX + name, value.encode()) for name, value in meta.items()] + list(self.original_headers)

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | tuple) -> DeadLetter:
        """Read a record consumed from the dead-letter topic back into a DeadLetter."""
        meta = {name[len(PREFIX) :]: raw.decode() for name, raw in headers if name.startswith(PREFIX)}
        missing = {"reason", "source.topic", "source.partition", "source.offset"} - meta.keys()
        if missing:
            raise ValueError(f"not an opswarm dead letter: headers {sorted(missing)} missing")
        return cls(
            reason=meta["reason"],
            error_type=meta.get("error_type", "unknown"),
            source_topic=meta["source.topic"],
            source_partition=int(meta["source.partition"]),
            source_offset=int(meta["source.offset"]),
            consumer_group=meta.get("consumer_group", ""),
            attempts=int(meta.get("attempts", "1")),
            failed_at=datetime.fromisoformat(meta["failed_at"]) if "failed_at" in meta else datetime.now(UTC),
            key=key,
            value=value,
            original_headers=tuple((n, v) for n, v in headers if not n.startswith(PREFIX)),
        )
