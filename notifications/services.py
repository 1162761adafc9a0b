"""Sending notifications to rigs: durable, deduplicated, pushed to the board by an Event;
acknowledging them.

Every cascade (unblocked work, base moved, interface changed, ...) sends through
`notification_send` (or its batched form `notifications_send_many`), so deduplication and the
rigs' notify levels live in one place. This app knows rigs, not convoys: a caller that knows
the rig's convoy passes its id (`convoy_id`) for the event.
"""

import hashlib
import json
import uuid
from collections import Counter
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from events.models import Event
from events.services import event_append, events_append_many
from notifications import webhooks
from notifications.models import Notification
from notifications.signals import notifications_created
from rigs.models import MergeRequest, Rig

Severity = Notification.Severity
# Which severities a rig's notify level pushes to the board/agent live (all are stored).
PUSHED_SEVERITIES = {
    Rig.NotifyLevel.ALL: {Severity.INFO, Severity.WARNING, Severity.CRITICAL},
    Rig.NotifyLevel.IMPORTANT: {Severity.WARNING, Severity.CRITICAL},
    Rig.NotifyLevel.MUTED: set(),
}
SUMMARY_MAX = Notification._meta.get_field("summary").max_length
ACTION_MAX = 20_000  # what to do: a long file list is cut, never stored whole


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    `convoy_id` is the convoy the rig works for (the caller knows it): the event is shown on
    that convoy's page. Returns None for an archived rig: nobody is left to read it.
    """
    if kind not in Notification.Kind.values:
        raise ValueError(f"unknown notification kind {kind!r}")
    if severity not in Severity.values:
        raise ValueError(f"unknown notification severity {severity!r}")
    if rig.state == Rig.State.ARCHIVED:
        return None
    summary, action = _cut(summary, SUMMARY_MAX), _cut(action, ACTION_MAX)
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
        webhooks.webhooks_enqueue_many([notification])
        notifications_created.send(sender=Notification, notifications=[notification])

    if severity in PUSHED_SEVERITIES.get(rig.notify_level, set()):
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
def notifications_send_many(items: list[dict[str, Any]]) -> list[Notification]:
    """`notification_send` for many notifications in a few queries (a cascade tells a hundred
    rigs at once). Each item holds `notification_send`'s arguments, with `convoy_id` given.
    Same outcome as sending them one by one; if a racing sender inserts a duplicate meanwhile,
    it falls back to exactly that."""
    prepared = []
    for item in items:
        rig, kind, severity = item["rig"], item["kind"], item["severity"]
        if kind not in Notification.Kind.values or severity not in Severity.values:
            raise ValueError(f"unknown notification kind or severity: {kind!r}, {severity!r}")
        if rig.state == Rig.State.ARCHIVED:
            continue
        summary = _cut(item["summary"], SUMMARY_MAX)
        action = _cut(item.get("action", ""), ACTION_MAX)
        changes = json.loads(json.dumps(item.get("changes") or {}, default=str))
        fingerprint = notification_fingerprint(
            rig_id=rig.pk, kind=kind, summary=summary, action=action, changes=changes
        )
        prepared.append((item, summary, action, changes, fingerprint))
    if not prepared:
        return []
    existing = {
        (n.rig_id, n.fingerprint): n
        for n in Notification.objects.filter(
            acked_at__isnull=True,
            rig_id__in={p[0]["rig"].pk for p in prepared},
            fingerprint__in={p[4] for p in prepared},
        )
    }
    new: dict[tuple[int, str], Notification] = {}
    bumps: Counter[int] = Counter()
    results: list[tuple[dict, Notification, bool]] = []
    for item, summary, action, changes, fingerprint in prepared:
        key = (item["rig"].pk, fingerprint)
        if key in existing:
            notification = existing[key]
            bumps[notification.pk] += 1
            notification.occurrences += 1
            results.append((item, notification, False))
        elif key in new:
            new[key].occurrences += 1
            results.append((item, new[key], False))
        else:
            new[key] = Notification(
                rig=item["rig"],
                kind=item["kind"],
                severity=item["severity"],
                summary=summary,
                action=action,
                changes=changes,
                source_rig=item.get("source_rig"),
                source_merge_request=item.get("source_merge_request"),
                source_commits=item.get("source_commits", ""),
                cascade=item.get("cascade") or uuid.uuid4(),
                depth=item.get("depth", 0),
                fingerprint=fingerprint,
            )
            results.append((item, new[key], True))
    try:
        with transaction.atomic():
            Notification.objects.bulk_create(list(new.values()))
    except IntegrityError:
        return [n for n in (notification_send(**item) for item in items) if n is not None]
    now = timezone.now()
    for pk, count in bumps.items():
        Notification.objects.filter(pk=pk).update(
            occurrences=F("occurrences") + count, updated_at=now
        )
    webhooks.webhooks_enqueue_many(list(new.values()))
    if new:
        notifications_created.send(sender=Notification, notifications=list(new.values()))
    events = []
    for item, notification, created in results:
        rig = item["rig"]
        if item["severity"] not in PUSHED_SEVERITIES.get(rig.notify_level, set()):
            continue
        events.append(
            Event(
                kind="notification.new" if created else "notification.repeated",
                payload={
                    "notification": notification.id,
                    "rig": rig.pk,
                    "kind": notification.kind,
                    "severity": notification.severity,
                    "summary": notification.summary,
                    "action": notification.action,
                    "occurrences": notification.occurrences,
                    "cascade": str(notification.cascade),
                    "depth": notification.depth,
                },
                repository_id=rig.repository_id,
                convoy_id=item.get("convoy_id"),
                rig_id=rig.pk,
            )
        )
    events_append_many(events)
    return [notification for _, notification, _ in results]


@transaction.atomic
def notification_ack(*, notification: Notification) -> Notification:
    """Acknowledge; acking twice is a no-op that keeps the first time."""
    notifications_ack(notifications=Notification.objects.filter(pk=notification.pk))
    notification.refresh_from_db(fields=["acked_at", "updated_at"])
    return notification


@transaction.atomic
def notifications_ack(*, notifications: QuerySet[Notification]) -> int:
    """Acknowledge the unacked ones among `notifications` (a rig's whole inbox, or one), with a
    `notification.acked` event each. Returns how many were acked."""
    now = timezone.now()
    rows = list(
        notifications.select_for_update(of=("self",))
        .filter(acked_at__isnull=True)
        .order_by("id")
        .values_list("id", "rig_id")
    )
    Notification.objects.filter(pk__in=[pk for pk, _ in rows], acked_at__isnull=True).update(
        acked_at=now, updated_at=now
    )
    events_append_many(
        [
            Event(kind="notification.acked", payload={"notification": pk}, rig_id=rig)
            for pk, rig in rows
        ]
    )
    return len(rows)
