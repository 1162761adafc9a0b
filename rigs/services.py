"""Writes for repositories, agents, rigs and merge requests: one transaction each."""

from django.db import transaction
from django.utils import timezone

from rigs import signals
from rigs.models import Agent, MergeRequest, Rig
from rigs.statemachine import transition


@transaction.atomic
def rig_transition(*, rig: Rig, to: str, reason: str = "", **fields) -> Rig:
    """The only way a rig changes state: checked against Rig.TRANSITIONS, announced by signal."""
    old = rig.state
    transition(rig, to, **fields)
    signals.rig_state_changed.send(sender=Rig, rig=rig, old_state=old, new_state=to, reason=reason)
    return rig


@transaction.atomic
def merge_request_transition(
    *, merge_request: MergeRequest, to: str, reason: str = "", **fields
) -> MergeRequest:
    old = merge_request.state
    if to not in MergeRequest.ACTIVE_STATES:
        fields.setdefault("finished_at", timezone.now())
    if reason:
        fields.setdefault("reason", reason)
    transition(merge_request, to, **fields)
    signals.merge_request_state_changed.send(
        sender=MergeRequest, merge_request=merge_request, old_state=old, new_state=to
    )
    return merge_request


@transaction.atomic
def merge_request_cancel(*, merge_request: MergeRequest, reason: str = "cancelled") -> MergeRequest:
    return merge_request_transition(
        merge_request=merge_request, to=MergeRequest.State.CANCELLED, reason=reason
    )


@transaction.atomic
def agent_create(
    *,
    name: str,
    runtime: str = Agent.Runtime.CUSTOM,
    runtime_command: str = "",
    token_expires_at=None,
) -> tuple[Agent, str]:
    """Create an agent and return it with its token (shown once; only the hash is kept)."""
    agent = Agent(
        name=name,
        runtime=runtime,
        runtime_command=runtime_command,
        token_expires_at=token_expires_at,
    )
    agent.full_clean(exclude=["token_hash", "token_prefix"])
    token = agent.issue_token()
    agent.save()
    return agent, token


@transaction.atomic
def agent_rotate_token(*, agent: Agent, expires_at=None) -> str:
    token = agent.issue_token()
    agent.token_expires_at = expires_at
    agent.save(update_fields=["token_hash", "token_prefix", "token_expires_at", "updated_at"])
    return token


@transaction.atomic
def agent_revoke_token(*, agent: Agent) -> None:
    agent.token_hash = ""
    agent.token_prefix = ""
    agent.save(update_fields=["token_hash", "token_prefix", "updated_at"])
