"""Outgoing webhooks: signed (Standard Webhooks, and the older header), public addresses
only, retried with backoff, logged."""

import base64
import hashlib
import hmac
import http.server
import json
import socket
import threading

import pytest
import standardwebhooks
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import override_settings

from notifications import webhooks
from notifications.models import Notification, Webhook, WebhookDelivery
from notifications.services import notification_send
from notifications.webhook_urls import url_refusal, validate_webhook_url
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def allow_private(monkeypatch):
    """The receivers below listen on loopback: allowed only with GASTOWN_WEBHOOK_ALLOW_PRIVATE
    (the environment too, for a worker process started after this)."""
    monkeypatch.setenv("GASTOWN_WEBHOOK_ALLOW_PRIVATE", "1")
    with override_settings(GASTOWN_WEBHOOK_ALLOW_PRIVATE=True):
        yield


@pytest.fixture
def receiver(allow_private):
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
    # Standard Webhooks: a plain (older) secret's key is its UTF-8 bytes.
    assert standardwebhooks.Webhook(b"s3cret").verify(body, headers)["notification"]["id"]
    assert headers["webhook-id"] == str(delivery.id)
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
    """(The worker process inherits GASTOWN_WEBHOOK_ALLOW_PRIVATE=1 from `allow_private`.)"""
    from tests.rigs.helpers import wait_for

    url, received, _ = receiver
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url=url, secret="s")
    send(rig)
    wait_for(lambda: received, timeout=30, message="webhook POST from the worker")
    wait_for(lambda: WebhookDelivery.objects.get().state == "delivered", timeout=10)


def test_standard_webhooks_signature_verifies_and_refuses_tampering(receiver):
    """A new webhook gets a `whsec_` secret; the receiver verifies with the standard library,
    and a changed body, an old timestamp or another secret are refused."""
    url, received, codes = receiver
    rig = factories.rig()
    hook = Webhook.objects.create(repository=rig.repository, url=url)
    assert hook.secret.startswith("whsec_") and len(base64.b64decode(hook.secret[6:])) == 32
    send(rig)
    delivery = WebhookDelivery.objects.get()
    codes.append(500)  # the first attempt fails: the retry carries the same webhook-id
    assert webhooks.webhook_deliver(delivery.id) is not None
    assert webhooks.webhook_deliver(delivery.id) is None
    (first, _), (headers, body) = received
    assert first["webhook-id"] == headers["webhook-id"] == str(delivery.id)
    verifier = standardwebhooks.Webhook(hook.secret)
    assert verifier.verify(body, headers)["notification"]["kind"] == "interface_changed"
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verifier.verify(body.replace(b"Update", b"Delete"), headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(webhooks.SECRET_PREFIX + "b3RoZXI=").verify(body, headers)
    stale = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verifier.verify(body, stale)


FORBIDDEN = [
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service (link-local)
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://metadata.google.internal/",
    "http://10.0.0.5/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://100.64.0.1/",  # shared address space (carrier NAT)
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",  # AWS's IPv6 metadata address (unique local)
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "ftp://example.com/",
]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_private_and_metadata_addresses_are_refused_when_saved(url):
    assert url_refusal(url)
    rig = factories.rig()
    with pytest.raises(ValidationError) as exc:
        Webhook(repository=rig.repository, url=url, secret="x").full_clean()
    assert "url" in exc.value.message_dict


def test_public_addresses_are_accepted_and_the_setting_allows_private():
    validate_webhook_url("https://hooks.slack.com/services/T000/B000/XXX")
    validate_webhook_url("http://93.184.215.14:8080/hook")
    validate_webhook_url("http://[2606:4700:4700::1111]/")
    with override_settings(GASTOWN_WEBHOOK_ALLOW_PRIVATE=True):
        validate_webhook_url("http://127.0.0.1:8000/hook")


def test_metadata_url_is_refused_at_delivery_without_a_request(monkeypatch):
    """A webhook saved before the rule (or by a raw write) is still refused when delivered:
    failed at once, no retry, no connection made."""
    monkeypatch.setattr(
        socket, "create_connection", lambda *a, **k: pytest.fail("no connection may be made")
    )
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url="http://169.254.169.254/", secret="x")
    send(rig)
    delivery = WebhookDelivery.objects.get()
    assert webhooks.webhook_deliver(delivery.id) is None
    delivery.refresh_from_db()
    assert delivery.state == "failed" and delivery.attempts == 1
    assert "refused" in delivery.last_error and "169.254.169.254" in delivery.last_error


def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery(monkeypatch):
    """DNS is checked at delivery: every address the name resolves to, not only the first."""

    def resolve(host, port, *args, **kwargs):
        assert host == "hooks.example.com"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:10.1.2.3", port, 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(
        socket, "create_connection", lambda *a, **k: pytest.fail("no connection may be made")
    )
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url="https://hooks.example.com/x")
    send(rig)
    delivery = WebhookDelivery.objects.get()
    assert webhooks.webhook_deliver(delivery.id) is None
    delivery.refresh_from_db()
    assert delivery.state == "failed" and "10.1.2.3" in delivery.last_error


def test_delivery_connects_to_the_address_that_was_checked(receiver, monkeypatch):
    """The connection goes to the resolved and checked address (the name is resolved once),
    with the URL's host in the Host header."""
    url, received, _ = receiver
    port = url.split(":")[2].split("/")[0]
    calls = []
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        calls.append(host)
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    rig = factories.rig()
    Webhook.objects.create(repository=rig.repository, url=f"http://hooks.test:{port}/hook")
    send(rig)
    assert webhooks.webhook_deliver(WebhookDelivery.objects.get().id) is None
    assert calls.count("hooks.test") == 1
    assert received[0][0]["Host"] == f"hooks.test:{port}"
