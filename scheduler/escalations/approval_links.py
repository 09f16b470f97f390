"""Signed one-time approval links: "approve (or reject) action A of incident I, as recipient R, until T".

A link's token is `base64url(payload) "." base64url(HMAC-SHA256(key, base64url(payload)))`, the payload the JSON
{i: incident, a: action, d: decision, r: recipient, exp: unix time, n: nonce}, and the key derived from the
configured secret (so the secret signs nothing else directly). Nothing is stored when a link is made; redeeming
it stores its nonce (`SET NX PX`) until the link expires, so a link is honoured once and a replay is refused. The
signature is checked in constant time before anything in the payload is read; an expired link is refused whether
or not it was ever used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from redis.asyncio import Redis

from scheduler.redis_area import RedisArea, milliseconds

log = logging.getLogger(__name__)

Decision = Literal["approve", "reject"]
LinkStatus = Literal["ok", "invalid", "expired", "used"]

MAX_TOKEN_CHARS = 2048
_KEY_LABEL = b"opswarm approval links v1"


class _Claim(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    i: str = Field(min_length=1, max_length=200)
    a: str = Field(min_length=1, max_length=200)
    d: Decision
    r: str = Field(min_length=1, max_length=200)
    exp: float
    n: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True)
class LinkOutcome:
    """What a link says and whether it may be used; `message` says it in words for the person holding it."""

    status: LinkStatus
    message: str
    incident_id: str | None = None
    action_id: str | None = None
    decision: Decision | None = None
    recipient: str | None = None
    expires_at: datetime | None = None
    nonce: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ApprovalLinks:
    """Makes and redeems the signed one-time links of one agent (Redis area "links" under `prefix`)."""

    def __init__(
        self, secret: SecretStr, redis: Redis, *, prefix: str, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        raw = secret.get_secret_value().encode()
        if len(raw) < 16:
            raise ValueError("the link secret must be at least 16 characters long")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._key = hmac.new(raw, _KEY_LABEL, hashlib.sha256).digest()
        self._area = RedisArea(redis, prefix=prefix, area="links")
        self._ttl_s = ttl_s
        self._clock = clock

    def make(self, incident_id: str, action_id: str, decision: Decision, recipient: str) -> str:
        """A link token deciding `decision` on `action_id` of `incident_id` as `recipient`, valid for ttl_s."""
        claim = _Claim(i=incident_id, a=action_id, d=decision, r=recipient, exp=round(self._clock() + self._ttl_s, 3),
                       n=secrets.token_urlsafe(18))  # fmt: skip
        payload = _encode(json.dumps(claim.model_dump(), sort_keys=True, separators=(",", ":")).encode())
        return f"{payload}.{_encode(self._sign(payload))}"

    async def peek(self, token: str) -> LinkOutcome:
        """What the link says and whether it would be honoured now, without using it up."""
        outcome = self._verify(token)
        if not outcome.ok:
            return outcome
        assert outcome.nonce is not None
        used = await self._area.run("exists", self._area.redis.exists(self._area.key("used", outcome.nonce)))
        return _refused(outcome, "used") if used else outcome

    async def redeem(self, token: str) -> LinkOutcome:
        """Use the link up: "ok" exactly once per link, before it expires; "used", "expired" or "invalid" else."""
        outcome = self._verify(token)
        if not outcome.ok:
            return outcome
        assert outcome.nonce is not None and outcome.expires_at is not None
        remaining = outcome.expires_at.timestamp() - self._clock()
        if remaining <= 0:
            return _refused(outcome, "expired")
        key = self._area.key("used", outcome.nonce)
        first = await self._area.run("set", self._area.redis.set(key, "1", nx=True, px=milliseconds(remaining)))
        if not first:
            log.info("approval link replayed", extra={"incident_id": outcome.incident_id, "nonce": outcome.nonce})
            return _refused(outcome, "used")
        log.info(
            "approval link redeemed",
            extra={"incident_id": outcome.incident_id, "decision": outcome.decision, "by": outcome.recipient},
        )
        return outcome

    async def release(self, outcome: LinkOutcome) -> None:
        """Make a redeemed link usable again (its decision could not be sent)."""
        if outcome.ok and outcome.nonce:
            await self._area.run("delete", self._area.redis.delete(self._area.key("used", outcome.nonce)))

    def _sign(self, payload: str) -> bytes:
        return hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest()

    def _verify(self, token: str) -> LinkOutcome:
        """The link's claim when its signature holds and it has not expired (Redis is not asked)."""
        parts = token.split(".") if 0 < len(token) <= MAX_TOKEN_CHARS else []
        if len(parts) != 2:
            return _invalid("this is not an approval link: it is malformed or cut short (copy the whole link)")
        payload, signature = parts
        try:
            given = _decode(signature)
        except ValueError:
            return _invalid("this approval link is malformed (its signature cannot be read)")
        if not hmac.compare_digest(given, self._sign(payload)):
            log.warning("approval link with a bad signature", extra={"token_chars": len(token)})
            return _invalid("this approval link was not signed by opswarm or was altered: it cannot be used")
        try:
            claim = _Claim.model_validate_json(_decode(payload))
        except (ValueError, ValidationError):
            return _invalid("this approval link is signed but its content cannot be read")
        outcome = LinkOutcome(
            "ok", f"{claim.d} action {claim.a} of incident {claim.i} as {claim.r}", incident_id=claim.i,
            action_id=claim.a, decision=claim.d, recipient=claim.r,
            expires_at=datetime.fromtimestamp(claim.exp, UTC), nonce=claim.n,
        )  # fmt: skip
        if self._clock() >= claim.exp:
            return _refused(outcome, "expired")
        return outcome


def _refused(outcome: LinkOutcome, status: Literal["expired", "used"]) -> LinkOutcome:
    when = outcome.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC") if outcome.expires_at else "?"
    message = {
        "expired": f"this approval link expired at {when}: decide on the approvals page or ask for a new link",
        "used": "this approval link was already used: each link works once (see the approvals page for the outcome)",
    }[status]
    return LinkOutcome(
        status, message, incident_id=outcome.incident_id, action_id=outcome.action_id, decision=outcome.decision,
        recipient=outcome.recipient, expires_at=outcome.expires_at, nonce=outcome.nonce,
    )  # fmt: skip


def _invalid(message: str) -> LinkOutcome:
    return LinkOutcome("invalid", message)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    """base64url without padding; ValueError for anything else (other characters, an impossible length)."""
    if not text or any(c not in _ALPHABET for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
