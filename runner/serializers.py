from decimal import Decimal

from rest_framework import serializers

from runner.models import AgentRun


class AgentRunSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.name", read_only=True)
    rig_slug = serializers.CharField(source="rig.slug", read_only=True)
    leg = serializers.CharField(source="leg.key", read_only=True, default=None)
    log_url = serializers.SerializerMethodField()

    class Meta:
        model = AgentRun
        fields = [
            "id",
            "rig",
            "rig_slug",
            "agent",
            "convoy",
            "leg",
            "state",
            "attempt",
            "restart_of",
            "command",
            "requested_by",
            "reason",
            "exit_code",
            "host",
            "pid",
            "not_before",
            "created_at",
            "started_at",
            "finished_at",
            "last_output_at",
            "stop_requested_at",
            "escalated_at",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "log_url",
        ]
        read_only_fields = fields

    def get_log_url(self, run: AgentRun) -> str:
        return f"/api/v1/runs/{run.id}/log/"


class RunLaunchSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class RunUsageSerializer(serializers.Serializer):
    """An increment: what the agent used since its last report."""

    input_tokens = serializers.IntegerField(min_value=0, max_value=10**12, default=0)
    output_tokens = serializers.IntegerField(min_value=0, max_value=10**12, default=0)
    cost_usd = serializers.DecimalField(
        max_digits=12,
        decimal_places=4,
        min_value=Decimal(0),
        max_value=Decimal(100000),
        default=Decimal(0),
    )


class RunLogSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    state = serializers.CharField()
    offset = serializers.IntegerField(help_text="Byte offset of `text` in the log.")
    next_offset = serializers.IntegerField(help_text="Pass as ?offset= to get what follows.")
    size = serializers.IntegerField()
    text = serializers.CharField()
    complete = serializers.BooleanField(help_text="The run ended: the log will not grow.")
