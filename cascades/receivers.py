"""Listens to the rigs' domain signals; each receiver is one call to a cascade. Signals arrive
inside the transaction that made the change: the answers and refused cascades commit or roll
back with it; the landed-merge cascade and the overlap radar read git, so they are enqueued for
after the commit. Connected after `convoys.receivers` (INSTALLED_APPS order), so the convoys
have moved first (a leg that landed is already landed when its rig's notices are answered).
"""

from django.dispatch import receiver

from cascades import answers, landed, overlap, refused
from rigs import signals


@receiver(signals.branch_updated)
def on_branch_updated(sender, rig, **kwargs) -> None:
    answers.notices_answer_sync(rig=rig)
    overlap.cascade_overlap_later(rig=rig)


@receiver(signals.rig_state_changed)
def on_rig_state_changed(sender, rig, new_state, **kwargs) -> None:
    answers.notices_answer_rig_end(rig=rig, new_state=new_state)


@receiver(signals.merge_request_state_changed)
def on_merge_request_state_changed(sender, merge_request, **kwargs) -> None:
    refused.cascade_merge_refused(merge_request=merge_request)


@receiver(signals.merge_landed)
def on_merge_landed(sender, merge_requests, repository, target_branch, **kwargs) -> None:
    answers.notices_answer_landing(merge_requests=merge_requests, new_tip=kwargs.get("new_tip"))
    landed.cascade_merge_landed_later(
        merge_requests=merge_requests,
        repository=repository,
        target_branch=target_branch,
        old_tip=kwargs.get("old_tip"),
        new_tip=kwargs.get("new_tip"),
    )
