"""Notifications to rigs (durable, acknowledgeable, deduplicated) and the outgoing webhooks
that carry them to people. The tables keep the names they had in `convoys` (`db_table`)."""

import base64
import secrets
import uuid

from django.core.validators import URLValidator
from django.db import models
from django.db.models import Q

from notifications.webhook_urls import validate_webhook_url
from rigs.models import MergeRequest, Repository, Rig


class Notification(models.Model):
    """One durable, acknowledgeable message to a rig, inside a cascade.

    A notice with a `topic` (its cause: "base", "overlap:12", "interface", ...) is a state, not
    a stream: a rig has at most one open notice per topic, updated in place as things change
    (the earlier versions kept in `revisions`) and resolved by what answers it (a rebase, a
    landing, an overlap gone). Without a topic, identical open notices merge (`occurrences`)."""

    class State(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"
        ACKNOWLEDGED = "acknowledged"

    class Kind(models.TextChoices):
        BASE_MOVED = "base_moved", "base moved"
        REBASE_NEEDED = "rebase_needed", "rebase needed"
        INTERFACE_CHANGED = "interface_changed", "interface changed"
        DEPENDENCIES_CHANGED = "dependencies_changed", "dependencies changed"
        UNBLOCKED = "unblocked"
        OVERLAP = "overlap", "overlapping work"
        GATE_FAILED = "gate_failed", "gate failed"
        MERGE_CONFLICTED = "merge_conflicted", "merge conflicted"
        MERGED = "merged"
        ASSIGNED = "assigned", "work assigned"
        ESCALATION = "escalation"
        DEFERRED = "deferred", "turn deferred"
        MESSAGE = "message"
        REVIEW_COMMENT = "review_comment", "review comment"
        INFO = "info"

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    rig = models.ForeignKey(Rig, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=30, choices=Kind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.INFO)
    summary = models.CharField(max_length=300)
    action = models.TextField(blank=True)
    changes = models.JSONField(default=dict, blank=True)
    source_rig = models.ForeignKey(
        Rig, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source_merge_request = models.ForeignKey(
        MergeRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source_commits = models.CharField(max_length=100, blank=True, help_text="old..new")
    sender = models.CharField(
        max_length=150, blank=True, help_text="Who wrote it (a message, an escalation, an answer)."
    )
    reply_to = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="replies",
        help_text="The notice this message answers: replies thread by it.",
    )
    cascade = models.UUIDField(default=uuid.uuid4, db_index=True)
    depth = models.PositiveSmallIntegerField(default=0)
    fingerprint = models.CharField(max_length=64, help_text="Identical notifications merge.")
    occurrences = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=12, choices=State.choices, default=State.OPEN)
    topic = models.CharField(
        max_length=100, blank=True, help_text="The cause: one open notice per rig and topic."
    )
    revisions = models.JSONField(
        default=list, blank=True, help_text="Earlier versions of an updated notice, oldest first."
    )
    resolution = models.CharField(max_length=300, blank=True, help_text="What resolved it.")
    resolved_at = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "convoys_notification"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rig", "fingerprint"],
                condition=Q(state="open"),
                name="notification_open_unique",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["open", "resolved", "acknowledged"]),
                name="notification_state_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["rig", "state", "created_at"], name="notification_inbox"),
        ]

    def __str__(self) -> str:
        return f"{self.rig}: {self.summary}"

    @property
    def is_open(self) -> bool:
        return self.state == self.State.OPEN

    @property
    def asks_action(self) -> bool:
        """Counted on cards and rig pages: an open notice that asks for an action now."""
        return self.is_open and self.severity in ACTION_SEVERITIES


ACTION_SEVERITIES = (Notification.Severity.WARNING, Notification.Severity.CRITICAL)
# Notices that ask a person (not the agent): answered on the board (`notifications/{id}/answer/`).
ASKS_PERSON_KINDS = (Notification.Kind.ESCALATION, Notification.Kind.DEFERRED)


class NotificationVersion(models.Model):
    """One version of a notice: what it said when a cause (a landed merge, a sync, a refusal)
    opened or updated it. A notice updated in place keeps one row per version here, so each
    landing still shows whom it told what (the cascade feed reads these)."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="versions"
    )
    revision = models.PositiveIntegerField(help_text="0 for the first version, then 1, 2, ...")
    rig = models.ForeignKey(Rig, on_delete=models.CASCADE, related_name="+")
    merge_request = models.ForeignKey(
        MergeRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=30, choices=Notification.Kind.choices)
    severity = models.CharField(max_length=10, choices=Notification.Severity.choices)
    summary = models.CharField(max_length=300)
    action = models.TextField(blank=True)
    source_commits = models.CharField(max_length=100, blank=True)
    cascade = models.UUIDField(db_index=True)
    depth = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["merge_request"], name="notification_version_mr"),
            models.Index(fields=["rig", "created_at"], name="notification_version_rig"),
        ]

    def __str__(self) -> str:
        return f"{self.notification_id} v{self.revision}: {self.summary}"

    # What the cascade feed reads of a notice, for this version.
    @property
    def source_merge_request(self) -> MergeRequest | None:
        return self.merge_request

    @property
    def source_merge_request_id(self) -> int | None:
        return self.merge_request_id

    @property
    def source_rig(self) -> Rig | None:
        return self.merge_request.rig if self.merge_request is not None else None

    @property
    def source_rig_id(self) -> int | None:
        return self.merge_request.rig_id if self.merge_request is not None else None

    @property
    def is_latest(self) -> bool:
        return self.revision == len(self.notification.revisions)

    @property
    def changes(self) -> dict:
        return self.notification.changes if self.is_latest else {}

    @property
    def state(self) -> str:
        """The notice's state now, and "updated" when a later version replaced this one."""
        return self.notification.state if self.is_latest else "updated"

    @property
    def acked_at(self):
        return self.notification.acked_at

    @property
    def asks_action(self) -> bool:
        """This version is what the notice says now, and it asks for an action."""
        return self.is_latest and self.notification.asks_action


def webhook_secret_new() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Webhook(models.Model):
    """An outgoing webhook: a repository's cascades, signed (Standard Webhooks), for people who
    want them in Slack or CI. Public addresses only (`notifications.webhook_urls`)."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(
        max_length=500,
        validators=[URLValidator(schemes=["http", "https"]), validate_webhook_url],
        help_text="http(s) endpoint on a public address that receives a POST.",
    )
    secret = models.CharField(
        max_length=200,
        default=webhook_secret_new,
        help_text="Signs each delivery (webhook-signature). whsec_<base64>: the key is the "
        "decoded bytes; any other text: its UTF-8 bytes.",
    )
    kinds = models.JSONField(
        default=list, blank=True, help_text="Notification kinds to send; empty sends all."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "convoys_webhook"
        ordering = ["repository_id", "id"]

    def __str__(self) -> str:
        return f"{self.repository} → {self.url}"


class WebhookDelivery(models.Model):
    """One attempt history of one webhook call: the delivery log."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    notification = models.ForeignKey(
        Notification, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    event = models.CharField(max_length=60)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "convoys_webhookdelivery"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook.url} ({self.state})"
