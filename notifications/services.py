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
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from events.models import Event
from events.services import events_append_many
from notifications import webhooks
from notifications.models import Notification, NotificationVersion
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
TOPIC_MAX = Notification._meta.get_field("topic").max_length
RESOLUTION_MAX = Notification._meta.get_field("resolution").max_length
SENDER_MAX = Notification._meta.get_field("sender").max_length
REVISIONS_KEPT = 20  # an updated notice keeps its last versions, not every count it went through
REVISION_ACTION_MAX = 500
REVISED_FIELDS = (
    "kind",
    "severity",
    "summary",
    "action",
    "changes",
    "revisions",
    "occurrences",
    "updated_at",
    "source_rig",
    "source_merge_request",
    "source_commits",
    "cascade",
    "depth",
)
SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def notification_fingerprint(
    *, rig_id: int, kind: str, summary: str, action: str, changes: dict | None, topic: str = ""
) -> str:
    """Open notifications that share this merge: those with a topic by (rig, topic), so a rig
    has one open notice per cause; the others when identical (rig, kind, summary, action and
    changes)."""
    key = [rig_id, "topic", topic] if topic else [rig_id, kind, summary, action, changes or {}]
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def notification_send(
    *,
    rig: Rig,
    kind: str,
    severity: str,
    summary: str,
    action: str = "",
    changes: dict[str, Any] | None = None,
    topic: str = "",
    source_rig: Rig | None = None,
    source_merge_request: MergeRequest | None = None,
    source_commits: str = "",
    cascade: uuid.UUID | None = None,
    depth: int = 0,
    convoy_id: int | None = None,
    sender: str = "",
    reply_to: Notification | None = None,
) -> Notification | None:
    """Tell `rig` something: `notifications_send_many` for one. Returns None for an archived
    rig (nobody is left to read it). `sender` (who wrote it) and `reply_to` (the notice it
    answers) are for messages, escalations and their answers."""
    sent = notifications_send_many(
        [
            {
                "rig": rig,
                "kind": kind,
                "severity": severity,
                "summary": summary,
                "action": action,
                "changes": changes,
                "topic": topic,
                "source_rig": source_rig,
                "source_merge_request": source_merge_request,
                "source_commits": source_commits,
                "cascade": cascade,
                "depth": depth,
                "convoy_id": convoy_id,
                "sender": sender,
                "reply_to": reply_to,
            }
        ]
    )
    return sent[0] if sent else None


@dataclass
class _Prepared:
    item: dict[str, Any]
    summary: str
    action: str
    changes: dict
    fingerprint: str

    @property
    def key(self) -> tuple[int, str]:
        return (self.item["rig"].pk, self.fingerprint)


def _prepare(item: dict[str, Any]) -> _Prepared | None:
    rig, kind, severity = item["rig"], item["kind"], item["severity"]
    if kind not in Notification.Kind.values:
        raise ValueError(f"unknown notification kind {kind!r}")
    if severity not in Severity.values:
        raise ValueError(f"unknown notification severity {severity!r}")
    if rig.state == Rig.State.ARCHIVED:
        return None
    summary = _cut(item["summary"], SUMMARY_MAX)
    action = _cut(item.get("action") or "", ACTION_MAX)
    changes = json.loads(json.dumps(item.get("changes") or {}, default=str))
    topic = _cut(item.get("topic") or "", TOPIC_MAX)
    fingerprint = notification_fingerprint(
        rig_id=rig.pk, kind=kind, summary=summary, action=action, changes=changes, topic=topic
    )
    return _Prepared({**item, "topic": topic}, summary, action, changes, fingerprint)


def _revise(notification: Notification, p: _Prepared, now) -> bool:
    """Update an open topic notice in place with the new version (the old one goes to
    `revisions`). False when nothing changed: no write, no event."""
    item = p.item
    same = (
        notification.kind == item["kind"]
        and notification.severity == item["severity"]
        and notification.summary == p.summary
        and notification.action == p.action
        and notification.changes == p.changes
    )
    if same:
        return False
    revision = {
        "at": notification.updated_at.isoformat() if notification.updated_at else None,
        "kind": notification.kind,
        "severity": notification.severity,
        "summary": notification.summary,
        "action": _cut(notification.action, REVISION_ACTION_MAX),
        "changes": notification.changes,
        "source_merge_request": notification.source_merge_request_id,
        "cascade": str(notification.cascade),
        "depth": notification.depth,
    }
    notification.revisions = [*notification.revisions, revision][-REVISIONS_KEPT:]
    notification.kind = item["kind"]
    notification.severity = item["severity"]
    notification.summary = p.summary
    notification.action = p.action
    notification.changes = p.changes
    notification.occurrences += 1
    notification.updated_at = now
    for name in ("source_rig", "source_merge_request"):
        if item.get(name) is not None:
            setattr(notification, name, item[name])
    if item.get("source_commits"):
        notification.source_commits = item["source_commits"]
    if item.get("cascade"):  # the latest cause's cascade (the feed shows it under that landing)
        notification.cascade, notification.depth = item["cascade"], item.get("depth", 0)
    return True


def _version(notification: Notification, cause: MergeRequest | None) -> NotificationVersion:
    """The row that keeps what a notice says now, and the merge (if any) that caused it."""
    return NotificationVersion(
        notification=notification,
        revision=len(notification.revisions),
        rig_id=notification.rig_id,
        merge_request=cause,
        kind=notification.kind,
        severity=notification.severity,
        summary=notification.summary,
        action=_cut(notification.action, REVISION_ACTION_MAX),
        source_commits=notification.source_commits,
        cascade=notification.cascade,
        depth=notification.depth,
    )


def _payload(notification: Notification) -> dict[str, Any]:
    return {
        "notification": notification.id,
        "rig": notification.rig_id,
        "kind": notification.kind,
        "severity": notification.severity,
        "summary": notification.summary,
        "action": notification.action,
        "occurrences": notification.occurrences,
        "cascade": str(notification.cascade),
        "depth": notification.depth,
        "state": notification.state,
        "topic": notification.topic,
    }


@transaction.atomic
def notifications_send_many(items: list[dict[str, Any]]) -> list[Notification]:
    """Tell many rigs something in a few queries (a cascade tells a hundred rigs at once).

    Each item holds `notification_send`'s arguments. An item with a `topic` updates the rig's
    open notice on that topic in place (`notification.updated`; nothing when unchanged) or
    opens one; an item without merges into an identical open notice (`occurrences` + 1,
    `notification.repeated`) or opens one (`notification.new`). Events go out when the rig's
    notify level lets the severity through. Webhooks get new notices and updates that raise
    the severity (not every change of a count). Returns the notifications in item order
    (archived rigs' items are dropped)."""
    prepared = [p for p in (_prepare(item) for item in items) if p is not None]
    if not prepared:
        return []
    try:
        with transaction.atomic():  # savepoint: a racing sender may open the same notice
            return _send(prepared)
    except IntegrityError:
        return _send(prepared)  # it committed first: now we see it and update it


def _send(prepared: list[_Prepared]) -> list[Notification]:
    now = timezone.now()
    existing = {
        (n.rig_id, n.fingerprint): n
        for n in Notification.objects.select_for_update(of=("self",))
        .filter(
            state=Notification.State.OPEN,
            rig_id__in={p.item["rig"].pk for p in prepared},
            fingerprint__in={p.fingerprint for p in prepared},
        )
        .order_by("id")
    }
    new: dict[tuple[int, str], Notification] = {}
    revised: dict[int, Notification] = {}
    escalated: dict[int, Notification] = {}
    bumps: Counter[int] = Counter()
    results: list[tuple[_Prepared, Notification, str | None]] = []  # (.., .., event kind)
    for p in prepared:
        item = p.item
        notification = existing.get(p.key) or new.get(p.key)
        if notification is None:
            notification = Notification(
                rig=item["rig"],
                kind=item["kind"],
                severity=item["severity"],
                summary=p.summary,
                action=p.action,
                changes=p.changes,
                topic=item["topic"],
                source_rig=item.get("source_rig"),
                source_merge_request=item.get("source_merge_request"),
                source_commits=item.get("source_commits", ""),
                cascade=item.get("cascade") or uuid.uuid4(),
                depth=item.get("depth", 0),
                fingerprint=p.fingerprint,
                sender=(item.get("sender") or "")[:SENDER_MAX],
                reply_to=item.get("reply_to"),
            )
            new[p.key] = notification
            results.append((p, notification, "notification.new"))
        elif item["topic"]:
            rank = SEVERITY_RANK[notification.severity]
            if _revise(notification, p, now):
                if notification.pk:
                    revised[notification.pk] = notification
                    if SEVERITY_RANK[notification.severity] > rank:
                        escalated[notification.pk] = notification
                results.append((p, notification, "notification.updated"))
            else:
                results.append((p, notification, None))
        else:
            notification.occurrences += 1
            if notification.pk:
                bumps[notification.pk] += 1
            results.append((p, notification, "notification.repeated"))
    Notification.objects.bulk_create(list(new.values()))
    # One UPDATE per revised notice: bulk_update's CASE per field per row costs seconds at a
    # hundred rows (measured by bench/cascade.py), these cost about a millisecond each.
    for notification in revised.values():
        Notification.objects.filter(pk=notification.pk).update(
            **{name: getattr(notification, name) for name in REVISED_FIELDS}
        )
    for pk, count in bumps.items():
        Notification.objects.filter(pk=pk).update(
            occurrences=F("occurrences") + count, updated_at=now
        )
    # A version per notice opened or changed, caused by the last item that changed it.
    causes: dict[int, MergeRequest | None] = {}
    for p, notification, kind in results:
        if kind in ("notification.new", "notification.updated"):
            causes[id(notification)] = p.item.get("source_merge_request")
    NotificationVersion.objects.bulk_create(
        [_version(n, causes[id(n)]) for n in [*new.values(), *revised.values()]]
    )
    webhooks.webhooks_enqueue_many([*new.values(), *escalated.values()])
    changed = [*new.values(), *revised.values()]
    if changed:
        notifications_created.send(sender=Notification, notifications=changed)
    events = []
    for p, notification, kind in results:
        rig = p.item["rig"]
        if kind is None or notification.severity not in PUSHED_SEVERITIES.get(
            rig.notify_level, set()
        ):
            continue
        events.append(
            Event(
                kind=kind,
                payload=_payload(notification),
                repository_id=rig.repository_id,
                convoy_id=p.item.get("convoy_id"),
                rig_id=rig.pk,
            )
        )
    events_append_many(events)
    return [notification for _, notification, _ in results]


@transaction.atomic
def notices_resolve(*, notifications: QuerySet[Notification], resolution: str) -> int:
    """Close the open ones among `notifications`: what they asked for is done, or no longer
    needed (a rebase, a landing, an overlap gone). A `notification.resolved` event each.
    Returns how many were resolved."""
    now = timezone.now()
    resolution = _cut(resolution, RESOLUTION_MAX)
    rows = list(
        notifications.select_for_update(of=("self",))
        .filter(state=Notification.State.OPEN)
        .order_by("id")
        .values_list("id", "rig_id", "rig__repository_id", "kind")
    )
    if not rows:
        return 0
    Notification.objects.filter(
        pk__in=[row[0] for row in rows], state=Notification.State.OPEN
    ).update(
        state=Notification.State.RESOLVED, resolved_at=now, resolution=resolution, updated_at=now
    )
    events_append_many(
        [
            Event(
                kind="notification.resolved",
                payload={
                    "notification": pk,
                    "rig": rig,
                    "kind": kind,
                    "resolution": resolution,
                },
                repository_id=repository,
                rig_id=rig,
            )
            for pk, rig, repository, kind in rows
        ]
    )
    return len(rows)


@transaction.atomic
def notification_ack(*, notification: Notification) -> Notification:
    """Acknowledge; acking twice (or a resolved notice) is a no-op that keeps the first."""
    notifications_ack(notifications=Notification.objects.filter(pk=notification.pk))
    notification.refresh_from_db(fields=["state", "acked_at", "updated_at"])
    return notification


@transaction.atomic
def notifications_ack(*, notifications: QuerySet[Notification]) -> int:
    """Acknowledge the open ones among `notifications` (a rig's whole inbox, or one), with a
    `notification.acked` event each. Returns how many were acked."""
    now = timezone.now()
    rows = list(
        notifications.select_for_update(of=("self",))
        .filter(state=Notification.State.OPEN)
        .order_by("id")
        .values_list("id", "rig_id")
    )
    Notification.objects.filter(
        pk__in=[pk for pk, _ in rows], state=Notification.State.OPEN
    ).update(state=Notification.State.ACKNOWLEDGED, acked_at=now, updated_at=now)
    events_append_many(
        [
            Event(kind="notification.acked", payload={"notification": pk}, rig_id=rig)
            for pk, rig in rows
        ]
    )
    return len(rows)
