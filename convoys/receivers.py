"""Listens to the rigs' domain signals and records them in the event log."""

from django.dispatch import receiver

from convoys.events import event_append
from convoys.models import Leg
from rigs import signals


def _convoy_of(rig) -> int | None:
    return (
        Leg.objects.filter(rig=rig)
        .exclude(state=Leg.State.CANCELLED)
        .order_by("-id")
        .values_list("convoy_id", flat=True)
        .first()
    )


@receiver(signals.rig_state_changed)
def on_rig_state_changed(sender, rig, old_state, new_state, reason="", **kwargs) -> None:
    event_append(
        "rig.state",
        {"rig": rig.id, "slug": rig.slug, "from": old_state, "to": new_state, "reason": reason},
        repository_id=rig.repository_id,
        convoy_id=_convoy_of(rig),
        rig_id=rig.id,
    )


@receiver(signals.rig_progress)
def on_rig_progress(sender, rig, **kwargs) -> None:
    event_append(
        "rig.progress",
        {"rig": rig.id, "progress": rig.progress, "label": rig.progress_label},
        repository_id=rig.repository_id,
        convoy_id=_convoy_of(rig),
        rig_id=rig.id,
    )


@receiver(signals.merge_request_state_changed)
def on_merge_request_state_changed(sender, merge_request, old_state, new_state, **kwargs) -> None:
    event_append(
        "merge_request.state",
        {"merge_request": merge_request.id, "from": old_state, "to": new_state},
        repository_id=merge_request.repository_id,
        convoy_id=_convoy_of(merge_request.rig_id),
        rig_id=merge_request.rig_id,
    )
