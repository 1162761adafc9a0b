"""How convoys follow what happens in rigs: the rules behind `convoys.receivers` (each receiver
is one call to one of these). They run inside the transaction that made the rigs' change, so
they commit or roll back with it. The rigs append their own `rig.*` and `merge_request.*`
events; the cascades to other rigs are `cascades.receivers`' (they listen after these)."""

import logging

from django.db import transaction
from django.db.models import Q

from convoys.models import Convoy, Leg
from convoys.selectors import leg_merge_target, rig_current_leg
from convoys.services.convoys import (
    convoy_landing_merged,
    convoy_refresh_state,
    leg_follow_rig,
    leg_land,
)
from notifications.models import Notification
from notifications.services import notices_resolve
from rigs.models import MergeRequest, Repository, Rig

logger = logging.getLogger(__name__)


@transaction.atomic
def convoys_follow_rig_state(*, rig: Rig, old_state: str, new_state: str) -> Leg | None:
    """The rig's current leg mirrors its progress (`leg_follow_rig`); a rig just recorded
    (no old state) has no leg yet."""
    leg = rig_current_leg(rig) if old_state else None
    if leg is not None and leg.convoy.state in Convoy.ACTIVE_STATES:
        leg_follow_rig(leg=leg, rig_state=new_state)
        if leg.state == Leg.State.WORKING:  # "start leg X" is answered: it started
            notices_resolve(
                notifications=Notification.objects.filter(rig=rig, topic=f"leg:{leg.id}"),
                resolution=f"leg {leg.key} started",
            )
    return leg


@transaction.atomic
def convoys_follow_merge_request(*, merge_request: MergeRequest, new_state: str) -> None:
    """A convoy's landing merge request that ends without landing leaves the convoy blocked (a
    landing is `convoys_follow_merge_landed`'s: the merge, not the state, is what counts). (A
    conflicted or failed merge request is told to its rig by `cascades.cascade_merge_refused`.)"""
    ended = new_state not in MergeRequest.ACTIVE_STATES and new_state != MergeRequest.State.MERGED
    if merge_request.rig_id is None and ended:
        for convoy in Convoy.objects.filter(landing_merge_request=merge_request):
            convoy_refresh_state(convoy=convoy)


@transaction.atomic
def convoys_follow_merge_landed(
    *,
    merge_requests: list[MergeRequest],
    repository: Repository,
    target_branch: str,
) -> list[Convoy]:
    """Legs land when their rig's work is merged on the leg's merge target (the convoy's
    integration branch, or its target); a convoy's integration branch landing lands the convoy.
    Then the convoys move on (unblocked legs are handed to their rigs, finished convoys land).
    (The cascade to the other rigs is enqueued by `cascades.cascade_merge_landed_later`.)
    Returns the convoys that moved."""
    refresh: dict[int, Convoy] = {}
    landings: list[tuple[Convoy, MergeRequest]] = []
    for mr in merge_requests:
        if mr.rig_id is not None:
            legs = Leg.objects.filter(
                rig_id=mr.rig_id,
                state__in=Leg.OPEN_STATES,
                convoy__state__in=Convoy.ACTIVE_STATES,
                convoy__repository=repository,
            ).select_related("convoy")
            for leg in legs:
                if leg_merge_target(leg) != target_branch:
                    continue
                if leg.state == Leg.State.PENDING:
                    # Its dependencies have not landed: the work merged early. It lands when
                    # its rig merges again after being handed the leg.
                    logger.info("leg %s merged before its dependencies landed", leg)
                    continue
                leg_land(leg=leg, merge_request=mr)
                refresh[leg.convoy_id] = leg.convoy
        else:
            condition = Q(landing_merge_request=mr)
            if mr.source_branch.startswith("convoy/"):
                condition |= Q(
                    repository=repository,
                    use_integration_branch=True,
                    target_branch=target_branch,
                    slug=mr.source_branch.removeprefix("convoy/"),
                    state__in=Convoy.ACTIVE_STATES,
                )
            landings.extend((convoy, mr) for convoy in Convoy.objects.filter(condition))
    moved = [convoy_refresh_state(convoy=convoy) for convoy in refresh.values()]
    moved += [convoy_landing_merged(convoy=convoy, merge_request=mr) for convoy, mr in landings]
    return moved
