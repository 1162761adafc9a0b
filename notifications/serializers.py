"""API shapes of a rig's inbox (the field names are the contract in DESIGN.md)."""

from rest_framework import serializers

from common.api import InputSerializer
from common.params import MAX_ID
from notifications.models import Notification


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Notification
        fields = [
            "id",
            "rig",
            "kind",
            "severity",
            "summary",
            "action",
            "changes",
            "cascade",
            "depth",
            "occurrences",
            "state",
            "topic",
            "revisions",
            "resolution",
            "resolved_at",
            "source_rig",
            "source_merge_request",
            "source_commits",
            "sender",
            "reply_to",
            "acked_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AckAllSerializer(InputSerializer):
    rig = serializers.IntegerField(
        min_value=1,
        max_value=MAX_ID,
        required=False,
        allow_null=True,
        help_text="only this rig's (default: all of yours)",
    )


class AckAllResultSerializer(serializers.Serializer):
    acked = serializers.IntegerField()
