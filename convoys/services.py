"""Writes for convoys, legs, beads and notifications: one transaction each, events included."""

from django.db import transaction
from django.utils import timezone

from convoys.events import event_append
from convoys.models import Bead, Convoy, Leg, Notification
from rigs.statemachine import transition


@transaction.atomic
def convoy_transition(*, convoy: Convoy, to: str, reason: str = "", **fields) -> Convoy:
    old = convoy.state
    transition(convoy, to, **fields)
    event_append(
        "convoy.state",
        {"from": old, "to": to, "reason": reason, "title": convoy.title},
        repository_id=convoy.repository_id,
        convoy_id=convoy.id,
    )
    return convoy


@transaction.atomic
def convoy_cancel(*, convoy: Convoy, reason: str = "") -> Convoy:
    for leg in convoy.legs.exclude(state__in=[Leg.State.LANDED, Leg.State.CANCELLED]):
        leg_transition(leg=leg, to=Leg.State.CANCELLED)
    return convoy_transition(convoy=convoy, to=Convoy.State.CANCELLED, reason=reason)


@transaction.atomic
def leg_transition(*, leg: Leg, to: str, **fields) -> Leg:
    old = leg.state
    if to == Leg.State.LANDED:
        fields.setdefault("landed_at", timezone.now())
    transition(leg, to, **fields)
    event_append(
        "leg.state",
        {"leg": leg.id, "key": leg.key, "from": old, "to": to},
        convoy_id=leg.convoy_id,
        rig_id=leg.rig_id,
    )
    return leg


@transaction.atomic
def bead_transition(*, bead: Bead, to: str, **fields) -> Bead:
    old = bead.status
    transition(bead, to, **fields)
    event_append(
        "bead.status",
        {"bead": bead.short_id, "title": bead.title, "from": old, "to": to},
        rig_id=bead.rig_id,
        convoy_id=bead.convoy_id or (bead.leg.convoy_id if bead.leg_id else None),
    )
    return bead


@transaction.atomic
def bead_close(*, bead: Bead, reason: str = "") -> Bead:
    return bead_transition(
        bead=bead, to=Bead.Status.CLOSED, close_reason=reason, closed_at=timezone.now()
    )


@transaction.atomic
def bead_reopen(*, bead: Bead) -> Bead:
    return bead_transition(bead=bead, to=Bead.Status.OPEN, close_reason="", closed_at=None)


@transaction.atomic
def notification_ack(*, notification: Notification) -> Notification:
    """Acknowledge; acking twice is a no-op that keeps the first time."""
    if notification.acked_at is None:
        now = timezone.now()
        Notification.objects.filter(pk=notification.pk, acked_at__isnull=True).update(
            acked_at=now, updated_at=now
        )
        notification.refresh_from_db(fields=["acked_at", "updated_at"])
        event_append(
            "notification.acked", {"notification": notification.id}, rig_id=notification.rig_id
        )
    return notification
