"""Outgoing webhooks: cascades delivered to Slack, CI or anything that takes a POST.

Each delivery is signed the Standard Webhooks way (https://www.standardwebhooks.com/):
`webhook-id` (the delivery's id, the same on every retry: receivers drop repeats),
`webhook-timestamp` (unix seconds: receivers refuse old ones, so a replay fails) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. The key is the
webhook's secret: a `whsec_<base64>` secret (what new webhooks get) is the base64-decoded bytes;
an older plain secret is its UTF-8 bytes. The older `X-Gastown-Signature-256: sha256=<hex HMAC
of the body, keyed by the secret's text>` is still sent. Only public addresses are posted to
(`notifications.webhook_urls`), no redirect is followed; failures are retried with exponential
backoff; every delivery is logged (admin: webhook deliveries).
"""

import base64
import hashlib
import hmac
import http.client
import json
import logging
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from notifications import tasks
from notifications.models import Notification, Webhook, WebhookDelivery
from notifications.webhook_urls import AddressRefused, resolve_checked

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
TIMEOUT_SECONDS = 10
SECRET_PREFIX = "whsec_"


def webhook_signature(secret: str, body: bytes) -> str:
    """The older header's value: `sha256=<hex HMAC-SHA256 of the body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_key(secret: str) -> bytes:
    """The Standard Webhooks signing key of a secret (`whsec_<base64>`, or plain text)."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    return secret.encode()


def standard_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


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
            "state": notification.state,
            "topic": notification.topic,
            "revision": len(notification.revisions),
            "created_at": notification.created_at.isoformat(),
            "updated_at": notification.updated_at.isoformat() if notification.updated_at else None,
        },
        "rig": {"id": rig.id, "slug": rig.slug, "branch": rig.branch},
        "repository": {"id": rig.repository_id, "name": rig.repository.name},
    }


def webhooks_enqueue_many(notifications: list[Notification]) -> list[WebhookDelivery]:
    """Record a delivery per matching webhook (in the caller's transaction, in one query for
    the hooks and one insert) and send them after commit."""
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


def _post(url: str, body: bytes, headers: dict) -> int:
    """POST to the checked address of the URL's host (TLS still verifies the host name);
    redirects are not followed. Returns the status; raises AddressRefused, OSError..."""
    host, port, address = resolve_checked(url)
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(host, port, timeout=TIMEOUT_SECONDS)
    connection._create_connection = lambda _address, timeout, source=None: (
        socket.create_connection((address, port), timeout, source)
    )
    path = parts.path or "/"
    try:
        connection.request("POST", f"{path}?{parts.query}" if parts.query else path, body, headers)
        return connection.getresponse().status
    finally:
        connection.close()


def webhook_deliver(delivery_id: int) -> float | None:
    """Make one attempt. Returns the delay before the next attempt, or None when finished (a
    URL refused for its address fails at once: no retry)."""
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    if delivery.state != WebhookDelivery.State.PENDING:
        return None
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    secret = delivery.webhook.secret
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GasTown-Webhook/1",
        "X-Gastown-Event": delivery.event,
        "X-Gastown-Delivery": str(delivery.id),
        "X-Gastown-Signature-256": webhook_signature(secret, body),
        **standard_headers(secret, str(delivery.id), int(time.time()), body),
    }
    status, error, refused = None, "", False
    try:
        status = _post(delivery.webhook.url, body, headers)
        error = "" if 200 <= status < 300 else f"HTTP {status}"
    except AddressRefused as exc:
        error, refused = f"refused: {exc}"[:500], True
    except (OSError, ValueError, http.client.HTTPException) as exc:
        error = (str(exc) or type(exc).__name__)[:500]
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
    elif refused or attempts >= MAX_ATTEMPTS:
        fields.update(state=WebhookDelivery.State.FAILED, next_attempt_at=None)
    else:
        delay = backoff_seconds(attempts)
        fields["next_attempt_at"] = now + timedelta(seconds=delay)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    return delay


def webhook_redeliver(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=WebhookDelivery.State.PENDING, attempts=0, next_attempt_at=None
    )
    transaction.on_commit(lambda: tasks.webhook_deliver.delay(delivery.id))
