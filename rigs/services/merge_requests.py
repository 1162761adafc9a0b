"""Merge requests: create, move, cancel, prioritize, land."""

import contextlib
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from common.errors import Refusal
from common.faults import fault_point
from common.statemachine import StaleState, transition
from events.services import event_append
from rigs import signals, tasks
from rigs.models import MergeApproval, MergeRequest, Repository, Rig
from rigs.services.base import _merge_request_state_event, _validate_field
from rigs.services.rigs import rig_transition
from rigs.validators import validate_branch_name


@transaction.atomic
def merge_request_transition(
    *, merge_request: MergeRequest, to: str, reason: str = "", **fields: Any
) -> MergeRequest:
    old = merge_request.state
    if to not in MergeRequest.ACTIVE_STATES:
        fields.setdefault("finished_at", timezone.now())
    if reason:
        fields.setdefault("reason", reason)
    transition(merge_request, to, **fields)
    _merge_request_state_event(merge_request, old, to)
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
def merge_request_prioritize(*, merge_request: MergeRequest, priority: int) -> MergeRequest:
    """Move a queued request up or down the queue (0 is most urgent)."""
    if not 0 <= priority <= 4:
        raise ValidationError({"priority": "priority must be between 0 and 4."})
    if priority == merge_request.priority:
        return merge_request
    updated = MergeRequest.objects.filter(pk=merge_request.pk, state=MergeRequest.State.QUEUED)
    if not updated.update(priority=priority, updated_at=timezone.now()):
        merge_request.refresh_from_db(fields=["state"])
        raise Refusal(
            f"merge request {merge_request.id} is {merge_request.state}; only a queued request "
            "can change priority.",
            code="not_queued",
            field="priority",
        )
    merge_request.priority = priority
    event_append(
        "merge_request.updated",
        {"merge_request": merge_request.id, "fields": ["priority"], "priority": priority},
        repository_id=merge_request.repository_id,
        rig_id=merge_request.rig_id,
    )
    return merge_request


class MergeInProgress(Refusal):
    """A merge of this branch is being checked or gated right now."""

    code = "merge_in_progress"
    field = "rig"


@transaction.atomic
def merge_request_create(
    *,
    repository: Repository,
    source_branch: str,
    target_branch: str,
    rig: Rig | None = None,
    priority: int = 2,
    requested_by: str = "",
    forced: bool = False,
    reviews_required: int = 0,
) -> MergeRequest:
    """Queue `source_branch` to land on `target_branch`. A queued (or awaiting review) request
    for the same branch is superseded (its newer tip is what lands); one already being checked
    refuses with 409. `forced`: the caller overrode a refusal (open work); recorded on the
    request and in its first event. `reviews_required` > 0: it waits in `awaiting_review` until
    that many operators approve its source commit (`merge_request_review_record`)."""
    _validate_field("source_branch", validate_branch_name, source_branch)
    _validate_field("target_branch", validate_branch_name, target_branch)
    if source_branch == target_branch:
        raise ValidationError({"target_branch": "a branch cannot merge into itself."})
    if not 0 <= priority <= 4:
        raise ValidationError({"priority": "priority must be between 0 and 4."})
    if rig is not None and rig.state not in Rig.LIVE_STATES:
        raise ValidationError(
            {"rig": f"rig {rig.slug} is {rig.state}; only a provisioned rig can ask to merge."}
        )
    active = list(
        MergeRequest.objects.select_for_update().filter(
            repository=repository,
            source_branch=source_branch,
            target_branch=target_branch,
            state__in=MergeRequest.ACTIVE_STATES,
        )
    )
    for previous in active:
        if previous.state not in (MergeRequest.State.QUEUED, MergeRequest.State.AWAITING_REVIEW):
            raise MergeInProgress(
                f"merge request {previous.id} for {source_branch} is {previous.state}; "
                "wait for it to finish, then ask again."
            )
        merge_request_transition(
            merge_request=previous,
            to=MergeRequest.State.SUPERSEDED,
            reason="superseded by a newer request",
        )
    merge_request = MergeRequest.objects.create(
        repository=repository,
        rig=rig,
        source_branch=source_branch,
        target_branch=target_branch,
        source_commit=rig.head_commit if rig is not None else "",
        priority=priority,
        requested_by=requested_by,
        forced=forced,
        reviews_required=max(0, reviews_required),
        state=MergeRequest.State.AWAITING_REVIEW
        if reviews_required > 0
        else MergeRequest.State.QUEUED,
    )
    _merge_request_state_event(merge_request, "", merge_request.state, forced=forced)
    signals.merge_request_state_changed.send(
        sender=MergeRequest,
        merge_request=merge_request,
        old_state="",
        new_state=merge_request.state,
    )
    if rig is not None and rig.state != Rig.State.MERGING:
        rig_transition(rig=rig, to=Rig.State.MERGING, reason=f"merge request {merge_request.id}")
    transaction.on_commit(lambda: tasks.merge_queue_process.delay(repository.id, target_branch))
    return merge_request


@transaction.atomic
def merge_request_finish(
    *, merge_request: MergeRequest, to: str, reason: str = "", **fields: Any
) -> MergeRequest:
    """End a merge request that did not land (conflicted, failed, cancelled); its rig goes back
    to work. Receivers tell the rig why (conflicting files, gate log)."""
    merge_request_transition(merge_request=merge_request, to=to, reason=reason, **fields)
    rig = merge_request.rig
    if rig is not None and rig.state == Rig.State.MERGING:
        with contextlib.suppress(StaleState):
            rig_transition(rig=rig, to=Rig.State.WORKING, reason=f"merge {to}")
    return merge_request


@transaction.atomic
def merge_requests_publishing(*, commits: dict[int, dict[str, Any]]) -> int:
    """What the merge queue is about to publish, written before it moves the target: each
    request's `merge_commit`, `target_commit` and gate result, the state unchanged (checking or
    testing; no event: nothing happened yet that a client sees). A worker killed after the move
    leaves this for `QueueRun.recover` to record as the landing it was. Returns rows written."""
    written = 0
    for merge_request_id, fields in commits.items():
        written += MergeRequest.objects.filter(
            pk=merge_request_id, state__in=(MergeRequest.State.CHECKING, MergeRequest.State.TESTING)
        ).update(**fields, updated_at=timezone.now())
    return written


@transaction.atomic
def merge_requests_landed(
    *,
    merge_requests: list[MergeRequest],
    repository: Repository,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    changed_paths: list[str],
    commits: dict[int, dict[str, Any]],
) -> None:
    """Record that a published candidate landed these merge requests, all in one transaction;
    then announce it (`merge_landed`) for convoys and cascades."""
    for merge_request in merge_requests:
        merge_request_transition(
            merge_request=merge_request,
            to=MergeRequest.State.MERGED,
            reason="landed",
            **commits.get(merge_request.id, {}),
        )
        rig = merge_request.rig
        if rig is not None and rig.state == Rig.State.MERGING:
            rig_transition(rig=rig, to=Rig.State.MERGED, reason=f"landed on {target_branch}")
    signals.merge_landed.send(
        sender=MergeRequest,
        merge_requests=merge_requests,
        repository=repository,
        target_branch=target_branch,
        old_tip=old_tip,
        new_tip=new_tip,
        changed_paths=changed_paths,
    )
    fault_point("landing.recording")  # (the fault campaign: inside the landing's transaction)


class ReviewRefused(Refusal):
    """A review that does not apply: the request is not waiting for one, or the diff reviewed
    is not its current source commit."""

    code = "not_awaiting_review"
    field = "merge_request"


def approvals_of(merge_request: MergeRequest, commit: str) -> int:
    """How many people approved ``commit`` of the request (each counts once)."""
    return (
        MergeApproval.objects.filter(
            merge_request=merge_request, commit=commit, verdict=MergeApproval.Verdict.APPROVED
        )
        .values("by")
        .distinct()
        .count()
    )


@transaction.atomic
def merge_request_review_record(
    *, merge_request: MergeRequest, verdict: str, by: str, commit: str, note: str = ""
) -> MergeApproval:
    """An operator's verdict on a merge request's source commit, kept as its audit trail
    (`merge_request.reviewed` event). Approved: once `reviews_required` people approved that
    commit, the request is queued for gating. Changes requested: the request is cancelled and
    its rig goes back to work (the caller tells the agent why). ``commit`` must be the request's
    source commit now (the diff the reviewer saw): else 409 `stale_commit`."""
    # (the rig is a nullable join: PostgreSQL locks the request's row only, `of=("self",)`)
    locked = (
        MergeRequest.objects.select_for_update(of=("self",))
        .select_related("rig")
        .get(pk=merge_request.pk)
    )
    waiting = (MergeRequest.State.AWAITING_REVIEW,)
    if verdict == MergeApproval.Verdict.CHANGES_REQUESTED:
        waiting += (MergeRequest.State.QUEUED,)
    if locked.state not in waiting:
        raise ReviewRefused(
            f"merge request #{locked.id} is {locked.state}: "
            + ("it does not wait for a review." if locked.state != "queued" else "it is approved.")
        )
    if verdict not in MergeApproval.Verdict.values:
        raise ValidationError({"verdict": "approved or changes_requested."})
    if commit != locked.source_commit:
        raise ReviewRefused(
            f"merge request #{locked.id} is at {locked.source_commit[:10] or 'no commit yet'} "
            f"now, not {commit[:10] or '(none)'}: review the current diff.",
            code="stale_commit",
            field="commit",
        )
    approval = MergeApproval.objects.create(
        merge_request=locked, commit=commit, verdict=verdict, by=by[:150], note=note
    )
    count = approvals_of(locked, commit)
    event_append(
        "merge_request.reviewed",
        {"merge_request": locked.id, "commit": commit, "verdict": verdict, "by": approval.by,
         "approvals": count, "required": locked.reviews_required},
        repository_id=locked.repository_id,
        rig_id=locked.rig_id,
    )  # fmt: skip
    if verdict == MergeApproval.Verdict.CHANGES_REQUESTED:
        merge_request_finish(
            merge_request=locked,
            to=MergeRequest.State.CANCELLED,
            reason=f"changes requested by {approval.by}" + (f": {note}" if note else ""),
        )
    elif count >= locked.reviews_required:
        merge_request_transition(
            merge_request=locked,
            to=MergeRequest.State.QUEUED,
            reason=f"approved by {approval.by} at {commit[:10]}",
        )
        repository_id, target = locked.repository_id, locked.target_branch
        transaction.on_commit(lambda: tasks.merge_queue_process.delay(repository_id, target))
    merge_request.refresh_from_db()
    return approval
