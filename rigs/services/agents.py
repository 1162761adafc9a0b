"""Agents and tokens."""

import secrets
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from events.services import event_append
from rigs.models import Agent, ApiToken
from rigs.services.base import _changes, _full_clean, _refuse_unknown


@transaction.atomic
def agent_create(
    *,
    name: str,
    runtime: str = Agent.Runtime.CUSTOM,
    runtime_command: str = "",
    token_expires_at: datetime | None = None,
    is_active: bool = True,
) -> tuple[Agent, str]:
    """Create an agent and return it with its token (shown once; only the hash is kept)."""
    agent = Agent(
        name=name,
        runtime=runtime,
        runtime_command=runtime_command,
        token_expires_at=token_expires_at,
        is_active=is_active,
    )
    _full_clean(agent, exclude=["token_hash", "token_prefix"])
    token = agent.issue_token()
    agent.save()
    return agent, token


def _agent_event(kind: str, agent: Agent, extra: dict[str, Any]) -> None:
    """Agents' events carry names only: never a token, never the runtime command."""
    event_append(kind, {"agent": agent.id, "name": agent.name, **extra})


AGENT_EDITABLE = ("name", "runtime", "runtime_command", "token_expires_at", "is_active")


@transaction.atomic
def agent_update(*, agent: Agent, **fields: Any) -> Agent:
    """Change an agent's settings (admin only: the runtime command is run by the server)."""
    _refuse_unknown(fields, AGENT_EDITABLE, "agent")
    changes = _changes(agent, fields)
    if not changes:
        return agent
    for name, value in changes.items():
        setattr(agent, name, value)
    _full_clean(agent, exclude=["token_hash", "token_prefix"], validate_constraints=False)
    agent.save(update_fields=[*changes, "updated_at"])
    _agent_event("agent.updated", agent, {"fields": sorted(changes)})
    return agent


@transaction.atomic
def agent_rotate_token(*, agent: Agent, expires_at: datetime | None = None) -> str:
    token = agent.issue_token()
    agent.token_expires_at = expires_at
    agent.save(update_fields=["token_hash", "token_prefix", "token_expires_at", "updated_at"])
    _agent_event("agent.token", agent, {"action": "rotated"})
    return token


@transaction.atomic
def agent_revoke_token(*, agent: Agent) -> None:
    agent.token_hash = ""
    agent.token_prefix = ""
    agent.save(update_fields=["token_hash", "token_prefix", "updated_at"])
    _agent_event("agent.token", agent, {"action": "revoked"})


# --- the first admin login ---------------------------------------------------------------------


@transaction.atomic
def admin_login_ensure(*, username: str = "admin") -> tuple[str, str | None]:
    """A superuser `username` with a random password when there is no superuser yet. Returns
    (the name to log in with, the new password or None when a superuser existed): the password
    is shown once by the caller (`make run`, `manage.py ensure_admin`) and never kept."""
    User = get_user_model()
    existing = User.objects.filter(is_superuser=True).order_by("id").first()
    if existing is not None:
        return existing.get_username(), None
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    return username, password


# --- personal API tokens ------------------------------------------------------------------------
# (Not board state, so no events: a person's tokens are seen only in the admin.)


@transaction.atomic
def api_token_create(*, user, name: str = "", expires_at: datetime | None = None) -> tuple:
    """A personal API token for `user`; returns it with the raw token (shown once)."""
    token = ApiToken(user=user, name=name[:100], expires_at=expires_at)
    raw = token.issue()
    token.save()
    return token, raw


@transaction.atomic
def api_tokens_revoke(*, tokens) -> int:
    """Revoke tokens (a queryset); returns how many were still live."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


# --- rigs -------------------------------------------------------------------------------------
