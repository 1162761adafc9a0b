from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.utils.html import format_html

from common.admin import run_service_action
from common.forms import AsciiNumbers
from convoys.admin import RigWithBeadsAdmin
from rigs.admin import ServiceModelAdmin, _service_call
from rigs.models import Rig
from runner import budgets, selectors, services
from runner.limits import budget_limits
from runner.models import AgentRun, Budget


@admin.register(AgentRun)
class AgentRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "rig",
        "agent",
        "state",
        "attempt",
        "exit_code",
        "cost_usd",
        "started_at",
        "finished_at",
        "escalated_at",
    ]
    list_filter = ["state", "agent", "host"]
    search_fields = ["rig__slug", "agent__name", "reason", "command"]
    list_select_related = ["rig__repository", "agent"]
    date_hierarchy = "created_at"
    actions = ["stop"]
    exclude = ["token_hash"]
    readonly_fields = [
        f.name for f in AgentRun._meta.concrete_fields if f.name not in ("token_hash",)
    ] + ["log_tail"]

    def has_add_permission(self, request) -> bool:
        return False  # launch from the rig (admin action, board or API): it checks everything

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Stop (terminate the process group)")
    def stop(self, request, queryset) -> None:
        who = request.user.get_username()
        run_service_action(
            self,
            request,
            queryset,
            lambda run: services.agent_run_stop(run=run, requested_by=who),
            "Stopping",
        )

    @admin.display(description="Log (tail)")
    def log_tail(self, obj: AgentRun) -> str:
        chunk = selectors.run_log_read(obj)
        return format_html('<pre style="max-height: 30em; overflow: auto">{}</pre>', chunk["text"])


class AgentRunInline(admin.TabularInline):
    model = AgentRun
    fields = ["id", "state", "attempt", "exit_code", "cost_usd", "started_at", "reason"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-id"]
    show_change_link = True


admin.site.unregister(Rig)


@admin.register(Rig)
class RigWithRunsAdmin(RigWithBeadsAdmin):
    inlines = [*RigWithBeadsAdmin.inlines, AgentRunInline]
    actions = [*RigWithBeadsAdmin.actions, "launch_agent"]

    @admin.action(description="Launch the rig's agent (its runtime command)")
    def launch_agent(self, request, queryset) -> None:
        who = request.user.get_username()
        run_service_action(
            self,
            request,
            queryset,
            lambda rig: services.agent_run_request(
                rig=rig, requested_by=who, reason=f"launched by {who} (admin)", by_person=True
            ),
            "Launched the agent of",
        )


class BudgetChangeList(ChangeList):
    """The page's budgets with their spend: one aggregate query for the page."""

    def get_results(self, request) -> None:
        super().get_results(request)
        limits = budget_limits(self.result_list)
        for budget in self.result_list:
            budget._limit = limits[budget.pk]


class BudgetForm(AsciiNumbers, forms.ModelForm):
    """The scope follows from the one target chosen."""

    class Meta:
        model = Budget
        fields = [
            "agent",
            "repository",
            "convoy",
            "window",
            "limit_usd",
            "limit_tokens",
            "max_agents",
        ]

    def clean(self) -> dict:
        data = super().clean()
        given = [name for name in ("agent", "repository", "convoy") if data.get(name)]
        if len(given) != 1:
            raise forms.ValidationError("Choose exactly one of agent, repository and convoy.")
        self.instance.scope = given[0]
        return data


@admin.register(Budget)
class BudgetAdmin(ServiceModelAdmin):
    """Budgets: set, changed and deleted through runner.budgets (checked at once), with their
    spend over the window on the list (one aggregate query for the page)."""

    form = BudgetForm
    list_display = ["__str__", "limit_usd", "limit_tokens", "max_agents", "spent", "level_now"]
    list_filter = ["scope", "window"]
    list_select_related = ["agent", "repository", "convoy"]
    autocomplete_fields = ["agent", "repository", "convoy"]
    readonly_fields = ["scope", "level", "level_at", "set_by", "created_at", "updated_at"]

    def get_changelist(self, request, **kwargs):
        return BudgetChangeList

    def _limit(self, obj: Budget):
        limit = getattr(obj, "_limit", None)  # BudgetChangeList's, for the page
        return limit if limit is not None else budget_limits([obj])[obj.pk]

    @admin.display(description="spent in its window")
    def spent(self, obj: Budget) -> str:
        return self._limit(obj).figures

    @admin.display(description="level")
    def level_now(self, obj: Budget) -> str:
        return self._limit(obj).level

    def save_model(self, request, obj: Budget, form, change: bool) -> None:
        who = request.user.get_username()
        _service_call(lambda: budgets.budget_save(budget=obj, by=who))

    def delete_model(self, request, obj: Budget) -> None:
        budgets.budget_delete(budget=obj, by=request.user.get_username())

    def delete_queryset(self, request, queryset) -> None:
        for budget in queryset:
            self.delete_model(request, budget)
