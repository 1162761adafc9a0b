from django.contrib import admin
from django.utils.html import format_html

from common.admin import run_service_action
from convoys.admin import RigWithBeadsAdmin
from rigs.models import Rig
from runner import selectors, services
from runner.models import AgentRun


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
