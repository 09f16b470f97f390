"""The local operator's credentials for answering escalations, kept under `<state_dir>/approvals/` (0600 files in a
0700 directory, generated on first use and reused after, like the bridge's token):

- `operator-token`: an approver token named `local-operator`, which `opswarm scenario run --approve-via web` signs
  in to the approvals page with; the agents get only its sha256 (in OPSWARM_API_TOKENS).
- `link-secret`: the key that signs one-time approval links and the page's forms (OPSWARM_LINK_SECRET), unless
  one is configured.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from deploy.localstack.bridge_token import read_secret_file, write_secret_file

OPERATOR = "local-operator"
_BYTES = 32


@dataclass(frozen=True)
class OperatorCredentials:
    token: str
    link_secret: str


def credentials_dir(state_dir: Path) -> Path:
    return state_dir / "approvals"


def ensure_operator_credentials(state_dir: Path) -> OperatorCredentials:
    """The kept credentials, generated the first time (concurrent callers end up with the same ones)."""
    directory = credentials_dir(state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    values = []
    for name in ("operator-token", "link-secret"):
        path = directory / name
        if not read_secret_file(path):
            write_secret_file(path, secrets.token_urlsafe(_BYTES), replace=False)
        os.chmod(path, 0o600)
        values.append(read_secret_file(path))
    return OperatorCredentials(*values)
