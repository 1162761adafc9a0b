"""Session tokens, format v2: ``v2.<user>.<expires>.<signature>``.

``expires`` is a Unix time; the signature is an HMAC-SHA256 of the rest, keyed by the
TOKEN_SECRET environment variable. v1 tokens (``v1:<user>``, unsigned) are refused.
"""

import hashlib
import hmac
import os
import time

VERSION = "v2"
LIFETIME_SECONDS = 3600
SECRET = os.environ.get("TOKEN_SECRET", "dev-only-secret").encode()


def _signature(payload: str) -> str:
    return hmac.new(SECRET, payload.encode(), hashlib.sha256).hexdigest()[:32]


def make_token(user: str, *, now: float | None = None) -> str:
    """A signed token for ``user`` that expires LIFETIME_SECONDS after ``now``."""
    if not user or "." in user:
        raise ValueError("a user name is non-empty and has no '.'")
    expires = int((time.time() if now is None else now) + LIFETIME_SECONDS)
    payload = f"{VERSION}.{user}.{expires}"
    return f"{payload}.{_signature(payload)}"


def parse_token(token: str, *, now: float | None = None) -> dict | None:
    """``{"user": ..., "expires": ...}`` for a valid, unexpired v2 token; else None."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION or not parts[2].isdigit():
        return None
    version, user, expires, signature = parts
    if not hmac.compare_digest(signature, _signature(f"{version}.{user}.{expires}")):
        return None
    if int(expires) < (time.time() if now is None else now):
        return None
    return {"user": user, "expires": int(expires)}
