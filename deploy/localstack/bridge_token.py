"""The bearer token between the stack's Alertmanager and the alert bridge, kept in `<state_dir>/bridge/token`.

The file is the one place both read it from: Alertmanager's webhook `http_config.authorization.credentials_file`
names it (the token never appears in a config file), and the bridge component passes its content to the bridge
process as `OPSWARM_BRIDGE__TOKEN`. With `OPSWARM_BRIDGE__TOKEN` set (not empty), the file holds that token;
without, a random one is generated on the first `opswarm up` and reused on later ones. The file is mode 0600 in a
0700 directory and is created atomically: two concurrent `up`s end up with the same token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from deploy.settings import Settings

_TOKEN_BYTES = 32


def token_file(state_dir: Path) -> Path:
    return state_dir / "bridge" / "token"


def ensure_token(settings: Settings) -> Path:
    """Make sure the token file holds the token in force (the configured one, else the kept or a new random one);
    returns the file."""
    path = token_file(settings.state_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = settings.bridge.token.get_secret_value().strip() if settings.bridge.token is not None else ""
    if wanted:
        if read_secret_file(path) != wanted:
            write_secret_file(path, wanted, replace=True)
    elif not read_secret_file(path):
        # Generated once: if another `up` got there first, its token is kept (the link below refuses to replace).
        write_secret_file(path, secrets.token_urlsafe(_TOKEN_BYTES), replace=False)
    os.chmod(path, 0o600)  # also a file put there by hand
    return path


def read_token(state_dir: Path) -> str:
    """The token in the file; ValueError when there is none (ensure_token was not called)."""
    token = read_secret_file(token_file(state_dir))
    if not token:
        raise ValueError(f"no bridge token in {token_file(state_dir)}")
    return token


def read_secret_file(path: Path) -> str:
    """The file's content, stripped; "" when there is no file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def write_secret_file(path: Path, token: str, *, replace: bool) -> None:
    """Write `token` to a private temporary file next to `path`, then move it in whole (replace) or link it in only
    if `path` does not exist yet (no replace)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(token)  # no newline: the file's bytes are the credentials
        if replace:
            os.replace(partial, path)
        else:
            if path.exists() and not read_secret_file(path):
                path.unlink()  # an empty file left by an interrupted writer is no token
            with contextlib.suppress(FileExistsError):
                os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)
