from decimal import Decimal

from rest_framework import serializers

from common.api import InputSerializer
from common.params import MAX_ID
from convoys.models import Convoy
from rigs.models import Agent, Repository
from runner.limits import Limit
from runner.models import AgentRun, Budget


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
            "stop_by",
            "escalated_at",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "log_url",
        ]
        read_only_fields = fields

    def get_log_url(self, run: AgentRun) -> str:
        return f"/api/v1/runs/{run.id}/log/"


class RunLaunchSerializer(InputSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class RunUsageSerializer(InputSerializer):
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


class BudgetSerializer(serializers.ModelSerializer):
    """A budget with what was spent against it over its window (`spent_*`, `percent`, `level`
    as of now; `cap`: how many runs may go at once under it now, null for no cap of its own)."""

    agent = serializers.CharField(source="agent.name", read_only=True, default=None)
    target = serializers.CharField(source="target_label", read_only=True)
    spent_usd = serializers.SerializerMethodField()
    spent_tokens = serializers.SerializerMethodField()
    percent = serializers.SerializerMethodField()
    level = serializers.SerializerMethodField()
    cap = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = [
            "id",
            "scope",
            "agent",
            "repository",
            "convoy",
            "target",
            "window",
            "limit_usd",
            "limit_tokens",
            "max_agents",
            "spent_usd",
            "spent_tokens",
            "percent",
            "level",
            "cap",
            "set_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def _limit(self, budget: Budget) -> Limit:
        """From the view's one aggregate for the page (`limits` in the context)."""
        return self.context["limits"][budget.pk]

    def get_spent_usd(self, budget: Budget) -> str:
        return f"{self._limit(budget).spent_usd:.4f}"

    def get_spent_tokens(self, budget: Budget) -> int:
        return self._limit(budget).spent_tokens

    def get_percent(self, budget: Budget) -> int:
        return self._limit(budget).percent

    def get_level(self, budget: Budget) -> str:
        return self._limit(budget).level

    def get_cap(self, budget: Budget) -> int | None:
        return self._limit(budget).cap()


class BudgetChangeSerializer(InputSerializer):
    """A budget's limits (PATCH: any of them)."""

    window = serializers.ChoiceField(choices=Budget.Window.choices, default=Budget.Window.DAY)
    limit_usd = serializers.DecimalField(
        max_digits=10,
        decimal_places=2,
        min_value=Decimal(0),
        required=False,
        allow_null=True,
        default=None,
        help_text="Dollars over the window; null: no limit in dollars.",
    )
    limit_tokens = serializers.IntegerField(
        min_value=0,
        max_value=MAX_ID,
        required=False,
        allow_null=True,
        default=None,
        help_text="Input plus output tokens over the window; null: no limit in tokens.",
    )
    max_agents = serializers.IntegerField(
        min_value=1,
        max_value=32767,
        required=False,
        allow_null=True,
        default=None,
        help_text="Runs at once under it (null: the machine's cap); halved from 80% spent.",
    )


class BudgetCreateSerializer(BudgetChangeSerializer):
    """A new budget: exactly one of `agent` (its name), `repository`, `convoy` (ids)."""

    agent = serializers.SlugRelatedField(
        slug_field="name", queryset=Agent.objects.all(), required=False, allow_null=True
    )
    repository = serializers.PrimaryKeyRelatedField(
        queryset=Repository.objects.all(), required=False, allow_null=True
    )
    convoy = serializers.PrimaryKeyRelatedField(
        queryset=Convoy.objects.all(), required=False, allow_null=True
    )
