"""Signed, expiring tokens that a socket presents at connect.

A token is ``<payload>.<signature>``: the payload is URL-safe base64 (no padding) of a small
JSON object ``{"u": user_id, "exp": unix_seconds}`` and the signature is URL-safe base64 of
HMAC-SHA256(secret, payload). The alphabet holds no ``?``, so base64 of the token (what
phoenix.js puts in the ``authToken`` subprotocol) never contains ``/``, which Node's ``ws``
would reject.

Security note: tokens are signed, not encrypted; put nothing secret in them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

import orjson

from switchboard.server.errors import AuthenticationError

DEFAULT_TTL = 24 * 3600
SUBPROTOCOL_PREFIX = "base64url.bearer.phx."


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    expires_at: int
    admin: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Decode base64 in either alphabet, with or without padding."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def issue_token(
    secret: str, user_id: str, ttl: int = DEFAULT_TTL, now: float | None = None, admin: bool = False
) -> str:
    """Sign a token for ``user_id`` valid for ``ttl`` seconds (``admin`` for the dashboard)."""
    if not user_id:
        raise ValueError("user_id must be a non-empty string")
    expires_at = int((time.time() if now is None else now) + ttl)
    claims: dict[str, object] = {"u": user_id, "exp": expires_at}
    if admin:
        claims["adm"] = 1
    payload = _b64(orjson.dumps(claims))
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(secret: str, token: str | None, now: float | None = None) -> Identity:
    """Return the token's identity or raise :class:`AuthenticationError` saying why."""
    if not token:
        raise AuthenticationError("missing token")
    payload, _, signature = token.partition(".")
    if not payload or not signature or not hmac.compare_digest(signature, _sign(secret, payload)):
        raise AuthenticationError("invalid token signature")
    try:
        claims = orjson.loads(_unb64(payload))
        user_id, expires_at = str(claims["u"]), int(claims["exp"])
        admin = claims.get("adm") == 1
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise AuthenticationError("malformed token") from None
    if (time.time() if now is None else now) >= expires_at:
        raise AuthenticationError("expired token")
    return Identity(user_id, expires_at, admin)


def token_from_subprotocols(subprotocols: list[str]) -> str | None:
    """Extract the token phoenix.js 1.8 sends as ``base64url.bearer.phx.<base64(token)>``."""
    for protocol in subprotocols:
        if protocol.startswith(SUBPROTOCOL_PREFIX):
            try:
                return _unb64(protocol[len(SUBPROTOCOL_PREFIX) :]).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
    return None
