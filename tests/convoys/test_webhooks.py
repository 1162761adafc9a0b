"""Outgoing webhooks: signed, retried with backoff, logged."""

import hashlib
import hmac
import http.server
import json
import threading

import pytest
from django.db import transaction

from convoys import webhooks
from convoys.models import Notification, Webhook, WebhookDelivery
from convoys.notifications import notification_send
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver():
    """A real HTTP server on loopback that records requests; answers with queued codes."""
    received, codes = [], []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(codes.pop(0) if codes else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received, codes
    server.shutdown()


def send(rig):
    with transaction.atomic():
        return notification_send(
            rig=rig,
            kind=Notification.Kind.INTERFACE_CHANGED,
            severity="warning",
            summary="Interface changed: auth/tokens.py (make_token)",
            action="Update your usage.",
            changes={"files": ["auth/tokens.py"]},
        )


def test_signed_delivery_verifies(receiver, settings):
    url, received, _ = receiver
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url=url, secret="s3cret")
    note = send(rig)
    delivery = WebhookDelivery.objects.get()
    assert webhooks.webhook_deliver(delivery.id) is None
    headers, body = received[0]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Gastown-Signature-256"], expected)
    assert headers["X-Gastown-Event"] == "notification.interface_changed"
    payload = json.loads(body)
    assert payload["notification"]["id"] == note.id
    assert payload["rig"]["slug"] == rig.slug
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.response_status == 200


def test_failures_are_retried_with_backoff_then_given_up(receiver, settings):
    settings.GASTOWN_WEBHOOK_BACKOFF_SECONDS = 2
    url, _received, codes = receiver
    codes.extend([500, 502])
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url=url, secret="x")
    send(rig)
    delivery = WebhookDelivery.objects.get()
    assert webhooks.webhook_deliver(delivery.id) == 2
    assert webhooks.webhook_deliver(delivery.id) == 4  # doubles
    assert webhooks.webhook_deliver(delivery.id) is None  # third time lucky
    delivery.refresh_from_db()
    assert delivery.state == "delivered" and delivery.attempts == 3
    # An endpoint that never answers is given up after MAX_ATTEMPTS.
    Webhook.objects.update(url="http://127.0.0.1:9/nothing-listens")
    other = WebhookDelivery.objects.create(webhook=Webhook.objects.get(), event="x", payload={})
    for _ in range(webhooks.MAX_ATTEMPTS):
        webhooks.webhook_deliver(other.id)
    other.refresh_from_db()
    assert other.state == "failed" and other.attempts == webhooks.MAX_ATTEMPTS
    assert other.last_error


def test_kind_filter_and_duplicates_send_once(receiver):
    url, _, _ = receiver
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url=url, secret="x", kinds=["overlap"])
    Webhook.objects.create(repository=rig.repository, url=url, secret="y")
    send(rig)
    send(rig)  # identical: merged into the first notification, no second delivery
    assert WebhookDelivery.objects.count() == 1


def test_delivery_through_the_worker(receiver, celery_worker):
    from tests.rigs.helpers import wait_for

    url, received, _ = receiver
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url=url, secret="s")
    send(rig)
    wait_for(lambda: received, timeout=30, message="webhook POST from the worker")
    wait_for(lambda: WebhookDelivery.objects.get().state == "delivered", timeout=10)
