"""Outgoing webhooks: cascades delivered to Slack, CI or anything that takes a POST.

Each body is signed (`X-Gastown-Signature-256: sha256=<HMAC-SHA256 of the body>`); failures
are retried with exponential backoff; every delivery is logged (admin: webhook deliveries).
"""

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from convoys.models import Notification, Webhook, WebhookDelivery

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
TIMEOUT_SECONDS = 10


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notification_payload(notification: Notification) -> dict:
    rig = notification.rig
    return {
        "event": f"notification.{notification.kind}",
        "notification": {
            "id": notification.id,
            "kind": notification.kind,
            "severity": notification.severity,
            "summary": notification.summary,
            "action": notification.action,
            "changes": notification.changes,
            "cascade": str(notification.cascade),
            "depth": notification.depth,
            "source_commits": notification.source_commits,
            "created_at": notification.created_at.isoformat(),
        },
        "rig": {"id": rig.id, "slug": rig.slug, "branch": rig.branch},
        "repository": {"id": rig.repository_id, "name": rig.repository.name},
    }


def webhooks_enqueue(notification: Notification) -> list[WebhookDelivery]:
    return webhooks_enqueue_many([notification])


def webhooks_enqueue_many(notifications: list[Notification]) -> list[WebhookDelivery]:
    """Record a delivery per matching webhook (in the caller's transaction, in one query for
    the hooks and one insert) and send them after commit."""
    from convoys import tasks

    repositories = {n.rig.repository_id for n in notifications}
    hooks = list(Webhook.objects.filter(repository_id__in=repositories, is_active=True))
    if not hooks:
        return []
    deliveries = [
        WebhookDelivery(
            webhook=hook,
            notification=notification,
            event=f"notification.{notification.kind}",
            payload=notification_payload(notification),
        )
        for notification in notifications
        for hook in hooks
        if hook.repository_id == notification.rig.repository_id
        and (not hook.kinds or notification.kind in hook.kinds)
    ]
    WebhookDelivery.objects.bulk_create(deliveries)
    for delivery in deliveries:
        transaction.on_commit(lambda d=delivery: tasks.webhook_deliver.delay(d.id))
    return deliveries


def backoff_seconds(attempt: int) -> float:
    base = getattr(settings, "GASTOWN_WEBHOOK_BACKOFF_SECONDS", 5.0)
    return base * (2 ** (attempt - 1))


def webhook_deliver(delivery_id: int) -> float | None:
    """Make one attempt. Returns the delay before the next attempt, or None when finished."""
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    if delivery.state != WebhookDelivery.State.PENDING:
        return None
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    if not delivery.webhook.url.startswith(("http://", "https://")):
        raise ValueError(f"webhook {delivery.webhook_id}: only http(s) URLs are delivered")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        delivery.webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "GasTown-Webhook/1",
            "X-Gastown-Event": delivery.event,
            "X-Gastown-Delivery": str(delivery.id),
            "X-Gastown-Signature-256": webhook_signature(delivery.webhook.secret, body),
        },
    )
    status, error = None, ""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        error = str(getattr(exc, "reason", exc))[:500]
    attempts = delivery.attempts + 1
    now = timezone.now()
    fields = {
        "attempts": attempts,
        "response_status": status,
        "last_error": error,
        "updated_at": now,
    }
    delay = None
    if status is not None and 200 <= status < 300:
        fields.update(state=WebhookDelivery.State.DELIVERED, delivered_at=now, last_error="")
    elif attempts >= MAX_ATTEMPTS:
        fields.update(state=WebhookDelivery.State.FAILED, next_attempt_at=None)
    else:
        delay = backoff_seconds(attempts)
        fields["next_attempt_at"] = now + timedelta(seconds=delay)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    return delay


def webhook_redeliver(delivery: WebhookDelivery) -> None:
    from convoys import tasks

    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=WebhookDelivery.State.PENDING, attempts=0, next_attempt_at=None
    )
    transaction.on_commit(lambda: tasks.webhook_deliver.delay(delivery.id))
