"""Who may see and answer escalations: API tokens with roles.

A token is configured by its sha256 only (the plain token is given to its holder, never stored): a name (the
identity recorded with every decision) and a role. viewer < approver < admin: a viewer reads, an approver also
decides, an admin also does what operators do.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["viewer", "approver", "admin"]
ROLE_ORDER: dict[Role, int] = {"viewer": 0, "approver": 1, "admin": 2}


class ApiToken(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@+-]+$")
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return ROLE_ORDER[self.role] >= ROLE_ORDER[role]


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identify(tokens: Sequence[ApiToken], presented: str | None) -> Identity | None:
    """The identity of the presented plain token, or None (compared in constant time against every token)."""
    if not presented:
        return None
    digest = token_sha256(presented)
    found = None
    for token in tokens:
        if hmac.compare_digest(token.sha256, digest):
            found = Identity(token.name, token.role)
    return found
