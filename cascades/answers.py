"""Trigger 4, what answers a notice: a rig's open notices are resolved by what makes them
moot (its landing, a rebase, its end), so an inbox holds what is still true. Runs inside the
transaction that made the change (a rig's sync, a landing, a rig's end)."""

from django.db.models import Q

from cascades import topics
from cascades.selectors import rig_in_audience
from notifications.models import Notification
from notifications.services import notices_resolve
from rigs.models import MergeRequest, Rig

ENDED_STATES = (Rig.State.ARCHIVED, Rig.State.FAILED)


def _overlap_with(rig_ids: list[int]) -> Q:
    """Open overlap notices about these rigs (on the other side of each pair)."""
    return Q(topic__in=[topics.overlap(i) for i in rig_ids])


def notices_answer_landing(*, merge_requests: list[MergeRequest], new_tip: str | None) -> int:
    """A rig that landed has answered its base, interface, dependencies and merge notices;
    its overlaps are over for both sides; a rig whose work is finished (its leg landed) keeps
    nothing open."""
    rigs = [mr.rig for mr in merge_requests if mr.rig is not None]
    if not rigs:
        return 0
    at = f" in {new_tip[:12]}" if new_tip else ""
    ids = [rig.id for rig in rigs]
    finished = [rig.id for rig in rigs if not rig_in_audience(rig)[0]]
    count = notices_resolve(
        notifications=Notification.objects.filter(rig_id__in=finished),
        resolution=f"your work landed{at}; nothing left to do in this rig",
    )
    count += notices_resolve(
        notifications=Notification.objects.filter(rig_id__in=ids).filter(
            Q(topic__in=topics.ANSWERED_BY_LANDING) | Q(topic__startswith=topics.OVERLAP_PREFIX)
        ),
        resolution=f"answered by your landing{at}",
    )
    slugs = ", ".join(sorted(rig.slug for rig in rigs))
    count += notices_resolve(
        notifications=Notification.objects.filter(_overlap_with(ids)),
        resolution=f"{slugs} landed{at}: the overlap is now part of your base",
    )
    return count


def notices_answer_sync(*, rig: Rig) -> int:
    """A rig on top of its target has answered its "base moved" notice."""
    if rig.behind or not rig.head_commit:
        return 0
    return notices_resolve(
        notifications=Notification.objects.filter(rig=rig, topic=topics.BASE),
        resolution=f"rebased: on top of the target at {rig.target_commit[:12] or 'its tip'}",
    )


def notices_answer_rig_end(*, rig: Rig, new_state: str) -> int:
    """An archived or failed rig keeps nothing open, and nobody overlaps with it any more."""
    if new_state not in ENDED_STATES:
        return 0
    count = notices_resolve(
        notifications=Notification.objects.filter(rig=rig), resolution=f"the rig is {new_state}"
    )
    return count + notices_resolve(
        notifications=Notification.objects.filter(_overlap_with([rig.id])),
        resolution=f"rig {rig.slug} is {new_state}",
    )
