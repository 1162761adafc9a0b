from django.contrib import admin

from common.admin import run_service_action
from notifications import services, webhooks
from notifications.models import Notification, Webhook, WebhookDelivery


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = [
        "summary",
        "rig",
        "kind",
        "severity",
        "state",
        "topic",
        "depth",
        "occurrences",
        "updated_at",
        "created_at",
    ]
    list_filter = ["state", "kind", "severity"]
    list_select_related = ["rig", "rig__repository"]
    search_fields = ["summary", "action", "rig__slug"]
    readonly_fields = [
        "rig",
        "kind",
        "severity",
        "summary",
        "action",
        "changes",
        "source_rig",
        "source_merge_request",
        "source_commits",
        "sender",
        "reply_to",
        "cascade",
        "depth",
        "fingerprint",
        "occurrences",
        "state",
        "topic",
        "revisions",
        "resolution",
        "resolved_at",
        "acked_at",
        "created_at",
        "updated_at",
    ]
    actions = ["ack"]

    def has_add_permission(self, request) -> bool:
        return False  # notifications are made by cascades

    @admin.action(description="Acknowledge selected notifications")
    def ack(self, request, queryset) -> None:
        run_service_action(
            self, request, queryset, lambda n: services.notification_ack(notification=n), "Acked"
        )


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["event", "state", "attempts", "response_status", "last_error", "created_at"]
    readonly_fields = fields
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "repository", "is_active", "kinds", "updated_at"]
    list_filter = ["is_active", "repository"]
    search_fields = ["url"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [WebhookDeliveryInline]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "event",
        "webhook",
        "state",
        "attempts",
        "response_status",
        "created_at",
        "delivered_at",
    ]
    list_filter = ["state", "event"]
    list_select_related = ["webhook", "webhook__repository"]
    search_fields = ["event", "last_error", "webhook__url"]
    readonly_fields = [
        "webhook",
        "notification",
        "event",
        "payload",
        "state",
        "attempts",
        "response_status",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "updated_at",
    ]
    actions = ["redeliver"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Deliver again")
    def redeliver(self, request, queryset) -> None:
        run_service_action(
            self, request, queryset, lambda d: webhooks.webhook_redeliver(d), "Queued again"
        )
