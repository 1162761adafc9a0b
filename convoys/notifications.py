"""Sending notifications to rigs: durable, deduplicated, pushed to the board by an Event.

Every cascade (unblocked work, base moved, interface changed, ...) sends through
`notification_send`, so deduplication and the rigs' notify levels live in one place.
"""

import hashlib
import json
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from convoys.events import event_append
from convoys.models import Notification
from convoys.selectors import rig_current_leg
from rigs.models import MergeRequest, Rig

Severity = Notification.Severity
# Which severities a rig's notify level pushes to the board/agent live (all are stored).
PUSHED_SEVERITIES = {
    Rig.NotifyLevel.ALL: {Severity.INFO, Severity.WARNING, Severity.CRITICAL},
    Rig.NotifyLevel.IMPORTANT: {Severity.WARNING, Severity.CRITICAL},
    Rig.NotifyLevel.MUTED: set(),
}
SUMMARY_MAX = Notification._meta.get_field("summary").max_length


def notification_fingerprint(
    *, rig_id: int, kind: str, summary: str, action: str, changes: dict | None
) -> str:
    """Identical notifications (same rig, kind, summary, action and changes) share this."""
    blob = json.dumps(
        [rig_id, kind, summary, action, changes or {}],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@transaction.atomic
def notification_send(
    *,
    rig: Rig,
    kind: str,
    severity: str,
    summary: str,
    action: str = "",
    changes: dict[str, Any] | None = None,
    source_rig: Rig | None = None,
    source_merge_request: MergeRequest | None = None,
    source_commits: str = "",
    cascade: uuid.UUID | None = None,
    depth: int = 0,
    convoy_id: int | None = None,
) -> Notification | None:
    """Tell `rig` something. An identical unacked notification is bumped (`occurrences` + 1)
    instead of repeated. Always stored; pushed as an Event (`notification.new`, or
    `notification.repeated` for a bump) when the rig's notify level lets this severity through.
    Returns None for an archived rig: nobody is left to read it.
    """
    if kind not in Notification.Kind.values:
        raise ValueError(f"unknown notification kind {kind!r}")
    if severity not in Severity.values:
        raise ValueError(f"unknown notification severity {severity!r}")
    if rig.state == Rig.State.ARCHIVED:
        return None
    summary = summary if len(summary) <= SUMMARY_MAX else summary[: SUMMARY_MAX - 1] + "…"
    changes = json.loads(json.dumps(changes or {}, default=str))  # what the JSON column keeps
    fingerprint = notification_fingerprint(
        rig_id=rig.pk, kind=kind, summary=summary, action=action, changes=changes
    )
    unacked = Notification.objects.filter(rig=rig, fingerprint=fingerprint, acked_at__isnull=True)

    def bump() -> bool:
        return bool(unacked.update(occurrences=F("occurrences") + 1, updated_at=timezone.now()))

    created = False
    if not bump():
        try:
            with transaction.atomic():  # savepoint: a racing sender may insert it first
                notification = Notification.objects.create(
                    rig=rig,
                    kind=kind,
                    severity=severity,
                    summary=summary,
                    action=action,
                    changes=changes,
                    source_rig=source_rig,
                    source_merge_request=source_merge_request,
                    source_commits=source_commits,
                    cascade=cascade or uuid.uuid4(),
                    depth=depth,
                    fingerprint=fingerprint,
                )
            created = True
        except IntegrityError:
            bump()
    if not created:
        notification = unacked.get()
    else:
        from convoys.webhooks import webhooks_enqueue

        webhooks_enqueue(notification)

    if severity in PUSHED_SEVERITIES.get(rig.notify_level, set()):
        if convoy_id is None:
            leg = rig_current_leg(rig)
            convoy_id = leg.convoy_id if leg else None
        event_append(
            "notification.new" if created else "notification.repeated",
            {
                "notification": notification.id,
                "rig": rig.pk,
                "kind": kind,
                "severity": severity,
                "summary": summary,
                "action": action,
                "occurrences": notification.occurrences,
                "cascade": str(notification.cascade),
                "depth": notification.depth,
            },
            repository_id=rig.repository_id,
            convoy_id=convoy_id,
            rig_id=rig.pk,
        )
    return notification


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
