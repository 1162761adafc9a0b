"""Who is calling, and how often.

- Agents: `Authorization: Token gt_…` (per-agent token, stored hashed). `request.user` is an
  `AgentUser`, `request.auth` the Agent.
- People: session (with CSRF) for the board and the browsable docs, or a personal API token
  `Authorization: Token gtp_…` for scripts. `request.user` is the Django user, `request.auth`
  the ApiToken.
- Websockets: `TokenAuthMiddleware` accepts the same tokens (`?token=` or the header).
- `TokenRateThrottle`: a fixed-window request budget per token (per user for sessions, per
  address for anonymous calls), shared by all web processes through Redis when there is one.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, throttling
from rest_framework.settings import api_settings

from rigs.models import Agent, ApiToken, hash_token

logger = logging.getLogger(__name__)


@dataclass
class AgentUser:
    """Stands in for `request.user` when an agent calls; `request.auth` is the Agent."""

    agent: Agent
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_staff: bool = False
    is_superuser: bool = False
    is_active: bool = True

    @property
    def username(self) -> str:
        return f"agent:{self.agent.name}"

    @property
    def pk(self) -> str:
        return self.username

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj=None) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


def agent_for_token(raw: str) -> Agent | None:
    agent = Agent.objects.filter(token_hash=hash_token(raw)).first() if raw else None
    if agent is None or not agent.token_valid(timezone.now()):
        return None
    return agent


# Writing `last_used_at` on every call would turn every read into a write; once a minute is
# enough to tell a used token from a forgotten one.
LAST_USED_GRANULARITY = timedelta(minutes=1)


def api_token_for(raw: str) -> ApiToken | None:
    token = (
        ApiToken.objects.select_related("user").filter(token_hash=hash_token(raw)).first()
        if raw
        else None
    )
    now = timezone.now()
    if token is None or not token.valid(now):
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


# More kinds of token, by prefix, added by other apps (the runner's per-run `gtr_` tokens): a
# resolver returns (user, auth) or None. The API and websockets accept them all.
TOKEN_KINDS: dict[str, Callable[[str], tuple[Any, Any] | None]] = {}


def principal_for_token(raw: str) -> tuple[Any, Agent | ApiToken] | None:
    """(user, auth) for an agent token or a personal token, None when it is not valid."""
    for prefix, resolve in TOKEN_KINDS.items():
        if raw.startswith(prefix):
            return resolve(raw)
    if raw.startswith(ApiToken.PREFIX):
        token = api_token_for(raw)
        return (token.user, token) if token else None
    agent = agent_for_token(raw)
    return (AgentUser(agent), agent) if agent else None


class AgentTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Token <key>`: an agent's token or a person's personal API token."""

    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Token header must be 'Token <key>'.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Token contains invalid characters.") from exc
        address = request.META.get("REMOTE_ADDR", "")
        wait = token_failures_wait(address)
        if wait is not None:
            raise exceptions.Throttled(
                wait, "Too many failed token checks from this address; retry later."
            )
        principal = principal_for_token(raw)
        if principal is None:
            token_failure_record(address)
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired token.")
        return principal

    def authenticate_header(self, request) -> str:
        return self.keyword


class TokenScheme(OpenApiAuthenticationExtension):
    """Replaces the agent-only description in rigs/schema.py (higher priority)."""

    target_class = "rigs.auth.AgentTokenAuthentication"
    name = "tokenAuth"
    priority = 1

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`: an agent's token (`manage.py create_agent NAME`), "
            "a person's personal API token (`manage.py create_api_token USERNAME`), or the "
            "token the runner gives an agent it launches (`gtr_…`, GT_TOKEN: valid while its "
            "run lives).",
        }


def calling_agent(request) -> Agent | None:
    return request.auth if isinstance(request.auth, Agent) else None


# --- websockets ---------------------------------------------------------------------------------


def _scope_token(scope: dict) -> str | None:
    """The token a websocket client sent: `?token=…`, or `Authorization: Token …`."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            parts = value.decode("latin-1").split()
            if len(parts) == 2 and parts[0].lower() == "token":
                return parts[1]
            return ""  # some other scheme: not ours, and not a valid token either
    return None


def _scope_principal(scope: dict, raw: str):
    """A websocket's token, checked under the same failed-token limit as the API's."""
    address = (scope.get("client") or ("", 0))[0] or ""
    if not raw or token_failures_wait(address) is not None:
        return None
    principal = principal_for_token(raw)
    if principal is None:
        token_failure_record(address)
    return principal


class TokenAuthMiddleware:
    """Channels middleware: a token in the query string or the Authorization header sets
    `scope["user"]` (an AgentUser or the token's person) and `scope["auth"]`. A bad token means
    an anonymous user (the consumer then refuses). Without a token, the session user that
    `AuthMiddlewareStack` put in the scope stays: wrap this *inside* that stack."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        raw = _scope_token(scope)
        if raw is not None:
            from channels.db import database_sync_to_async

            principal = await database_sync_to_async(_scope_principal)(scope, raw)
            user, auth = principal if principal else (AnonymousUser(), None)
            scope = {**scope, "user": user, "auth": auth}
        return await self.inner(scope, receive, send)


# --- throttling ---------------------------------------------------------------------------------


_REDIS = None


def _redis():
    global _REDIS
    if _REDIS is None:
        import redis

        _REDIS = redis.Redis.from_url(settings.REDIS_URL)
    return _REDIS


def _count(key: str, window: int) -> int:
    """Count one request in `key`'s window and return the count. Redis when the deployment has
    one (every web process shares the budget; INCR and EXPIRE in one round trip), else the
    process-local default cache (the embedded default runs one web process)."""
    if settings.REDIS_URL:
        pipe = _redis().pipeline(transaction=False)
        pipe.incr(f"gastown-throttle:{key}")
        pipe.expire(f"gastown-throttle:{key}", window + 1)
        return int(pipe.execute()[0])
    from django.core.cache import cache

    cache.add(key, 0, window + 1)
    return cache.incr(key)


FAILURE_WINDOW = 60


def _failure_key(address: str) -> str:
    bucket = int(time.time() // FAILURE_WINDOW)
    return f"{settings.RUN_TAG}:token-failures:{address}:{bucket}"


def token_failures_wait(address: str) -> float | None:
    """Seconds to wait when `address` failed too many token checks this minute, else None.
    (Failed checks are throttled before the token is looked up: guessing costs the guesser.)"""
    limit = settings.GASTOWN_TOKEN_FAILURES_PER_MINUTE
    if limit <= 0:
        return None
    try:
        failures = _peek(_failure_key(address))
    except Exception:  # a guard, not a dependency: fail open
        logger.warning("throttle cache unavailable; not throttling", exc_info=True)
        return None
    if failures < limit:
        return None
    return FAILURE_WINDOW - time.time() % FAILURE_WINDOW


def token_failure_record(address: str) -> None:
    try:
        _count(_failure_key(address), FAILURE_WINDOW)
    except Exception:
        logger.warning("throttle cache unavailable; failure not counted", exc_info=True)


def _peek(key: str) -> int:
    if settings.REDIS_URL:
        value = _redis().get(f"gastown-throttle:{key}")
        return int(value or 0)
    from django.core.cache import cache

    return int(cache.get(key) or 0)


class TokenRateThrottle(throttling.BaseThrottle):
    """N requests per window per token (`DEFAULT_THROTTLE_RATES["token"]`, e.g. "1200/min"),
    per session user, or per address when anonymous (`"anon"`). A counter per fixed window:
    one atomic INCR, not a list of timestamps."""

    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    @staticmethod
    def identity(request) -> tuple[str, str]:
        auth = request.auth
        # the hash's start keeps a rotated token (or a reused id) from inheriting a budget
        if isinstance(auth, Agent):
            return "token", f"agent:{auth.pk}:{auth.token_hash[:12]}"
        if isinstance(auth, ApiToken):
            return "token", f"apitoken:{auth.pk}:{auth.token_hash[:12]}"
        user = request.user
        if user is not None and user.is_authenticated:
            return "token", f"user:{user.pk}"
        return "anon", f"addr:{request.META.get('REMOTE_ADDR', '')}"

    def allow_request(self, request, view) -> bool:
        scope, ident = self.identity(request)
        rate = (api_settings.DEFAULT_THROTTLE_RATES or {}).get(scope)
        if not rate:
            return True
        count, unit = rate.split("/")
        limit = int(count)
        window = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit[0]]
        now = time.time()
        bucket = int(now // window)
        key = f"{settings.RUN_TAG}:{ident}:{window}:{bucket}"
        try:
            used = _count(key, window)
        except Exception:  # the budget is a guard, not a dependency: fail open
            logger.warning("throttle cache unavailable; not throttling", exc_info=True)
            return True
        if used > limit:
            self.wait_seconds = (bucket + 1) * window - now
            return False
        return True

    def wait(self) -> float | None:
        return self.wait_seconds
