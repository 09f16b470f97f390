"""Work with side effects, run at most once per idempotency key, its outcome event kept for every later asker.

`RunOnce.run(key, work, unknown)` claims `key` for this process's owner and then:

- first claim: runs `work`, records the outcome event under the key (done), returns it (`ran`);
- the key is done: returns the recorded outcome event without running anything (`replayed`);
- the key is claimed and not done: someone started the work and recorded nothing — another instance, this
  instance in an earlier process life (the owner carries a per-process nonce, so a restarted process does not
  take its predecessor's claim for its own), or a crash mid-work. Whether the effect happened is unknown, so the
  work is not run again; `unknown(why)` builds the answer (`unknown`).

An outcome this process produced but could not record (Redis away at that moment) is kept in memory, so the
retry of the same record stores it instead of calling it unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from bus.codec import decode_event, encode_event
from bus.errors import EventDecodeError
from bus.events import AnyEvent, Event
from scheduler.idempotency import IdempotencyStore

log = logging.getLogger(__name__)

How = Literal["ran", "replayed", "unknown"]


@dataclass(frozen=True, slots=True)
class Ran:
    outcome: Event
    how: How


class RunOnce:
    def __init__(self, claims: IdempotencyStore, owner: str) -> None:
        self._claims = claims
        self.owner = owner
        self._unrecorded: dict[str, Event] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[Event]], unknown: Callable[[str], Event]) -> Ran:
        claim = await self._claims.claim(key, self.owner)
        if claim.first:
            outcome = await work()
        elif claim.state == "done":
            recorded = self._recorded(key, claim.result)
            if recorded is None:
                return Ran(unknown("an earlier attempt finished but its recorded outcome is unreadable"), "unknown")
            return Ran(recorded, "replayed")
        elif claim.owner == self.owner and key in self._unrecorded:
            outcome = self._unrecorded[key]
        else:
            log.error(
                "claimed earlier and never finished: outcome unknown, not run again",
                extra={"key": key, "owner": self.owner, "claimed_by": claim.owner},
            )
            return Ran(unknown(f"an earlier attempt ({claim.owner}) started it and recorded no outcome"), "unknown")
        self._unrecorded[key] = outcome
        if not await self._claims.finish(key, {"outcome": encode_event(outcome).decode()}, owner=self.owner):
            log.warning("outcome not recorded: the key was finished or taken meanwhile", extra={"key": key})
        del self._unrecorded[key]
        return Ran(outcome, "ran")

    @staticmethod
    def _recorded(key: str, result: dict[str, object] | None) -> AnyEvent | None:
        raw = (result or {}).get("outcome")
        try:
            return decode_event(raw.encode() if isinstance(raw, str) else None)
        except EventDecodeError as exc:
            log.error("recorded outcome unreadable", extra={"key": key, "error": str(exc)})
            return None
