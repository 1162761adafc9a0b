"""Who may read which events (the policy `events.access` asks; settings.GASTOWN_EVENT_ACCESS).

- A person with a role (viewer, operator, admin) reads every event.
- A login without a role reads none, and the websocket refuses it.
- An agent reads the events of its own rigs and of the convoys it works in (a leg of the convoy
  is on one of its rigs); of other rigs' notifications (and ended turns) it sees that one was
  sent, never its text.
  On the websocket it may join `rig.<its rig>` and `convoy.<its convoy>` only.
"""

from typing import Any

from django.db.models import Q, QuerySet

from convoys.models import Leg
from rigs.models import Rig
from rigs.permissions import is_viewer

NOTIFICATION_KINDS = (
    "notification.new",
    "notification.repeated",
    "notification.updated",
    "notification.resolved",
)
# What another rig's notification event keeps for an agent (not its summary, action or why it
# was resolved).
REDACTED_KEEP = ("notification", "rig", "kind", "severity", "cascade", "depth", "state", "topic")
# Other events that carry a notice's text, and what they keep for another rig's agent.
REDACTED_OTHER = {
    "rig.turn_ended": ("rig", "slug", "status", "notification"),
    "review.comment": ("comment", "thread", "rig", "state", "action"),
}


def _agent(user: Any):
    return getattr(user, "agent", None)


def _agent_scope(agent) -> tuple[set[int], set[int]]:
    """(the agent's rig ids, the ids of the convoys it works in), read once per user object."""
    cached = getattr(agent, "_gastown_event_scope", None)
    if cached is None:
        rigs = set(Rig.objects.filter(agent=agent).values_list("id", flat=True))
        convoys = set(Leg.objects.filter(rig_id__in=rigs).values_list("convoy_id", flat=True))
        cached = (rigs, convoys)
        agent._gastown_event_scope = cached
    return cached


def events_visible(user: Any, queryset: QuerySet) -> QuerySet:
    agent = _agent(user)
    if agent is not None:
        rigs, convoys = _agent_scope(agent)
        return queryset.filter(Q(rig_id__in=rigs) | Q(convoy_id__in=convoys))
    if is_viewer(user):
        return queryset
    return queryset.none()


def groups_allowed(user: Any, groups: list[str]) -> list[str] | None:
    if user is None or not user.is_authenticated:
        return None
    agent = _agent(user)
    if agent is None:
        return groups if is_viewer(user) else None
    rigs, convoys = _agent_scope(agent)
    mine = {f"rig.{r}" for r in rigs} | {f"convoy.{c}" for c in convoys}
    return [g for g in groups if g in mine]


def event_for(user: Any, message: dict) -> dict | None:
    """A broadcast event as `user` may see it."""
    agent = _agent(user)
    if agent is None:
        return message if is_viewer(user) else None
    rigs, convoys = _agent_scope(agent)
    if message.get("rig") not in rigs and message.get("convoy") not in convoys:
        return None
    kind = message.get("kind")
    keep = REDACTED_KEEP if kind in NOTIFICATION_KINDS else REDACTED_OTHER.get(kind)
    if keep is not None and message.get("rig") not in rigs:
        payload = {k: v for k, v in (message.get("payload") or {}).items() if k in keep}
        return {**message, "payload": payload}
    return message
