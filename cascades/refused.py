"""Trigger 3, a merge conflicted or its gate failed: the owning rig is told, with the files or
the log tail, and the fix is queued as a bead. One open notice per rig (topic `merge`): the
latest refusal, until a landing answers it. Runs inside the transaction that refused it."""

from django.db import transaction

from cascades import topics
from convoys.selectors import rig_current_leg
from convoys.services import bead_create
from notifications.models import Notification
from notifications.services import notification_send
from rigs.models import MergeRequest

K = Notification.Kind
SEV = Notification.Severity
REFUSED_STATES = (MergeRequest.State.CONFLICTED, MergeRequest.State.FAILED)


def cascade_merge_refused(*, merge_request: MergeRequest) -> Notification | None:
    """Tell the owning rig why its merge did not land, and queue the fix as a bead (nothing for
    a merge request in any other state, or without a rig: no query either)."""
    if merge_request.state not in REFUSED_STATES or merge_request.rig_id is None:
        return None
    return _refused_tell(merge_request)


@transaction.atomic
def _refused_tell(merge_request: MergeRequest) -> Notification | None:
    rig = merge_request.rig
    leg = rig_current_leg(rig)
    convoy_id = leg.convoy_id if leg else None
    target = merge_request.target_commit
    if merge_request.state == MergeRequest.State.CONFLICTED:
        files = list(merge_request.conflicts)
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        bead = bead_create(
            rig=rig,
            leg=leg,
            title=f"Resolve merge conflicts in {shown}",
            description=f"Merge request {merge_request.id} conflicts with "
            f"{merge_request.target_branch} at {target}. Rebase onto it, resolve "
            + ", ".join(files)
            + ", then ask to merge again (gt done).",
            priority=0,
            type="bug",
            labels=["merge-conflict"],
            discovered_from_merge_request=merge_request,
        )
        return notification_send(
            rig=rig,
            kind=K.MERGE_CONFLICTED,
            severity=SEV.CRITICAL,
            topic=topics.MERGE,
            summary=f"Your merge conflicts with {merge_request.target_branch} in {shown}",
            action=f"Rebase {rig.branch} onto {target[:12]}, resolve the conflicts, then gt done "
            f"(tracked as {bead.short_id}).",
            changes={"conflicts": files, "target_commit": target, "bead": bead.short_id},
            source_merge_request=merge_request,
            convoy_id=convoy_id,
        )
    if merge_request.state == MergeRequest.State.FAILED:
        tail = merge_request.gate_log_tail
        return notification_send(
            rig=rig,
            kind=K.GATE_FAILED,
            severity=SEV.CRITICAL,
            topic=topics.MERGE,
            summary=f"Gate failed for merge request {merge_request.id}: {merge_request.reason}",
            action="Read the log tail, fix the failure on your branch, then gt done again.",
            changes={
                "exit_code": merge_request.gate_exit_code,
                "log_tail": tail,
                "candidate": merge_request.merge_commit,
                "target_commit": target,
            },
            source_merge_request=merge_request,
            convoy_id=convoy_id,
        )
    return None
