"""Helpers for convoy tests: land a merge the way the merge queue announces it."""

from django.db import transaction

from convoys.models import Convoy
from rigs import signals
from rigs.models import MergeRequest, Rig


def land(*, rig: Rig | None, target_branch: str, source_branch: str = "") -> MergeRequest:
    """Record a merged merge request and send `merge_landed`, inside one transaction, like the
    merge queue does. (End-to-end versions belong with the merge queue's tests.)"""
    repository = rig.repository if rig is not None else None
    return land_many(
        [(rig, source_branch or (rig.branch if rig else ""))],
        repository=repository,
        target_branch=target_branch,
    )[0]


def land_many(sources, *, repository, target_branch: str) -> list[MergeRequest]:
    with transaction.atomic():
        mrs = [
            MergeRequest.objects.create(
                rig=rig,
                repository=repository or rig.repository,
                source_branch=source,
                target_branch=target_branch,
                source_commit="a" * 40,
                state=MergeRequest.State.MERGED,
            )
            for rig, source in sources
        ]
        signals.merge_landed.send(
            sender=MergeRequest,
            merge_requests=mrs,
            repository=repository or mrs[0].repository,
            target_branch=target_branch,
            old_tip="1" * 40,
            new_tip="2" * 40,
            changed_paths=["README.md"],
        )
    return mrs


def land_convoy_branch(convoy: Convoy, merge_request: MergeRequest) -> None:
    """The integration branch's landing merge request landed on the convoy's target."""
    with transaction.atomic():
        MergeRequest.objects.filter(pk=merge_request.pk).update(state=MergeRequest.State.MERGED)
        merge_request.refresh_from_db()
        signals.merge_landed.send(
            sender=MergeRequest,
            merge_requests=[merge_request],
            repository=convoy.repository,
            target_branch=convoy.target_branch,
            old_tip="2" * 40,
            new_tip="3" * 40,
            changed_paths=["README.md"],
        )
