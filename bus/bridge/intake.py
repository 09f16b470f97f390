"""Reading a request before anything is parsed: the bearer token, the content type, a bounded body, its JSON.

Checked in that order, each a Rejection: 401 (no or wrong token, when one is configured), 415 (not JSON),
413 (Content-Length over the limit: refused unread; a body without one is read until the limit and no
further), 408 (the body did not arrive in time: a stalled sender holds no connection for ever), 400 (empty, not
UTF-8/JSON, or nested beyond the parser's depth).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

from pydantic import SecretStr
from starlette.requests import ClientDisconnect, Request

from bus.bridge.rejections import Rejection

REALM = "opswarm-bridge"


def check_token(authorization: str | None, token: SecretStr | None) -> None:
    """Rejection(401) unless `authorization` is `Bearer <token>`; nothing to check when no token is configured."""
    if token is None:
        return
    if not authorization:
        raise Rejection(
            401, "unauthorized", "a bearer token is required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
        )  # fmt: skip
    scheme, _, presented = authorization.strip().partition(" ")
    # Digests first: compare_digest is constant-time for equal lengths only, and the length is a secret too.
    expected = hashlib.sha256(token.get_secret_value().encode()).digest()
    given = hashlib.sha256(presented.strip().encode()).digest()
    if not hmac.compare_digest(given, expected) or scheme.lower() != "bearer":
        raise Rejection(
            401, "unauthorized", "the bearer token is not valid",
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
        )  # fmt: skip


def check_content_type(content_type: str | None) -> None:
    """Rejection(415) unless the body is declared JSON (application/json or a +json type, any charset)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    structured_json = media_type.startswith("application/") and media_type.endswith("+json")
    if media_type != "application/json" and not structured_json:
        shown = media_type or "none"
        raise Rejection(415, "unsupported_media_type", f"Content-Type must be application/json, not {shown}")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, never more than `limit` bytes of it read: Rejection(413) beyond, Rejection(400) when malformed,
    Rejection(408) when it is not all there within `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Rejection(400, "bad_request", f"Content-Length is not a number: {declared[:32]!r}")
        if int(declared) > limit:
            raise Rejection(413, "too_large", f"the body is {int(declared)} bytes; at most {limit} are taken")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise Rejection(413, "too_large", f"the body is over {limit} bytes; at most {limit} are taken")
    except ClientDisconnect:
        raise Rejection(400, "bad_request", "the client went away before the body was complete") from None
    except TimeoutError:
        detail = f"the body was not complete within {timeout_s:g} s ({len(body)} bytes came)"
        raise Rejection(408, "body_timeout", detail, headers={"Connection": "close"}) from None
    return bytes(body)


def decode_json(body: bytes) -> object:
    """The JSON document in `body`; Rejection(400) saying where it stops being JSON."""
    if not body.strip():
        raise Rejection(400, "not_json", "the body is empty; expected a JSON object")
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise Rejection(400, "not_json", f"the body is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise Rejection(400, "not_json", f"the body is not JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise Rejection(400, "not_json", "the body's JSON is nested too deeply") from None
