"""The audit's own writes (`--repair`): an event a state change never appended."""

from django.db import transaction

from events.services import event_append
from rigs.models import MergeRequest, Rig

AUDIT_REASON = "audit: a change that had no event"


@transaction.atomic
def rig_state_event_restore(*, rig: Rig, last_seen: str) -> None:
    """Append the `rig.state` event a change of `rig` never had, so that a client replaying the
    log ends at the rig's real state."""
    event_append(
        "rig.state",
        {
            "rig": rig.id,
            "slug": rig.slug,
            "from": last_seen,
            "to": rig.state,
            "reason": AUDIT_REASON,
            "progress": rig.progress,
            "label": rig.progress_label,
        },
        repository_id=rig.repository_id,
        rig_id=rig.id,
    )


@transaction.atomic
def merge_request_state_event_restore(*, merge_request: MergeRequest, last_seen: str) -> None:
    event_append(
        "merge_request.state",
        {"merge_request": merge_request.id, "from": last_seen, "to": merge_request.state},
        repository_id=merge_request.repository_id,
        rig_id=merge_request.rig_id,
    )
