"""Listens to the rigs' domain signals: records them in the event log and moves convoys.

All signals arrive inside the transaction that made the change, so what is done here commits or
rolls back with it.
"""

import logging

from django.db import transaction
from django.db.models import Q
from django.dispatch import receiver

from convoys import cascades, services
from convoys.models import Convoy, Leg
from convoys.selectors import leg_merge_target, rig_current_leg
from events.services import event_append
from rigs import signals
from rigs.models import MergeRequest

logger = logging.getLogger(__name__)


def _convoy_of(rig) -> int | None:
    leg = rig_current_leg(rig)
    return leg.convoy_id if leg else None


@receiver(signals.rig_state_changed)
def on_rig_state_changed(sender, rig, old_state, new_state, reason="", **kwargs) -> None:
    leg = rig_current_leg(rig) if old_state else None  # a rig just recorded has no leg yet
    event_append(
        "rig.state",
        {
            "rig": rig.id,
            "slug": rig.slug,
            "from": old_state,
            "to": new_state,
            "reason": reason,
            "progress": rig.progress,
            "label": rig.progress_label,
        },
        repository_id=rig.repository_id,
        convoy_id=leg.convoy_id if leg else None,
        rig_id=rig.id,
    )
    if leg is not None and leg.convoy.state in Convoy.ACTIVE_STATES:
        services.leg_follow_rig(leg=leg, rig_state=new_state)


@receiver(signals.rig_progress)
def on_rig_progress(sender, rig, **kwargs) -> None:
    event_append(
        "rig.progress",
        {"rig": rig.id, "progress": rig.progress, "label": rig.progress_label},
        repository_id=rig.repository_id,
        convoy_id=_convoy_of(rig),
        rig_id=rig.id,
    )


def _landing_convoy_id(merge_request: MergeRequest) -> int | None:
    return (
        Convoy.objects.filter(landing_merge_request=merge_request)
        .values_list("id", flat=True)
        .first()
    )


@receiver(signals.merge_request_state_changed)
def on_merge_request_state_changed(sender, merge_request, old_state, new_state, **kwargs) -> None:
    # A request's convoy does not change while it moves through the queue: look it up once per
    # request object (the queue moves each request three or four times).
    convoy_id = merge_request.__dict__.get("_gastown_convoy_id", False)
    if convoy_id is False:
        if merge_request.rig_id:
            convoy_id = _convoy_of(merge_request.rig_id)
        else:
            convoy_id = _landing_convoy_id(merge_request)
        merge_request.__dict__["_gastown_convoy_id"] = convoy_id
    event_append(
        "merge_request.state",
        {"merge_request": merge_request.id, "from": old_state, "to": new_state},
        repository_id=merge_request.repository_id,
        convoy_id=convoy_id,
        rig_id=merge_request.rig_id,
    )
    # A convoy's landing merge that ends without landing leaves the convoy blocked. (A landing
    # is handled by on_merge_landed: the merge, not the state, is what counts.)
    ended = new_state not in MergeRequest.ACTIVE_STATES and new_state != MergeRequest.State.MERGED
    if merge_request.rig_id is None and convoy_id and ended:
        services.convoy_refresh_state(convoy=Convoy.objects.get(pk=convoy_id))
    if new_state in (MergeRequest.State.CONFLICTED, MergeRequest.State.FAILED):
        cascades.cascade_merge_refused(merge_request=merge_request)


@receiver(signals.branch_updated)
def on_branch_updated(sender, rig, old_head, new_head, changed_files, **kwargs) -> None:
    leg = rig_current_leg(rig)
    event_append(
        "rig.branch",
        {
            "rig": rig.id,
            "slug": rig.slug,
            "from": old_head,
            "to": new_head,
            "ahead": rig.ahead,
            "behind": rig.behind,
            "files": len(changed_files),
        },
        repository_id=rig.repository_id,
        convoy_id=leg.convoy_id if leg else None,
        rig_id=rig.id,
    )
    cascades.cascade_overlap(rig=rig)


@receiver(signals.merge_landed)
def on_merge_landed(sender, merge_requests, repository, target_branch, **kwargs) -> None:
    """Legs land when their rig's work is merged on the leg's merge target (the convoy's
    integration branch, or its target); a convoy's integration branch landing lands the convoy.
    Then the convoys move on: unblocked legs are handed to their rigs, finished convoys land."""
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
                services.leg_land(leg=leg, merge_request=mr)
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
    for convoy in refresh.values():
        services.convoy_refresh_state(convoy=convoy)
    for convoy, mr in landings:
        services.convoy_landing_merged(convoy=convoy, merge_request=mr)
    _enqueue_cascade(merge_requests, repository, target_branch, kwargs)


def _enqueue_cascade(merge_requests, repository, target_branch, landed: dict) -> None:
    """The cascade needs git (forecasts, diffs), so it runs in a worker after this commits."""
    from convoys import tasks

    ids = [mr.id for mr in merge_requests]
    old_tip, new_tip = landed.get("old_tip"), landed.get("new_tip")
    if not (old_tip and new_tip) or old_tip == new_tip:
        return
    transaction.on_commit(
        lambda: tasks.cascade_merge_landed.delay(
            repository.id, target_branch, old_tip, new_tip, ids
        )
    )
