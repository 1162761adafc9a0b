from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.utils import timezone
from django.utils.html import format_html

from common.admin import run_service_action
from rigs import services
from rigs.models import Agent, ApiToken, MergeRequest, Repository, Rig


def show_token_once(modeladmin, request, owner: str, token: str) -> None:
    """Only the token's hash is stored: this message is the one time it can be seen."""
    modeladmin.message_user(
        request, f"Token for {owner} (shown once, store it now): {token}", messages.WARNING
    )


class RepositoryForm(forms.ModelForm):
    class Meta:
        model = Repository
        fields = [
            "name",
            "path",
            "init_if_missing",
            "target_branch",
            "gate_command",
            "gate_timeout_seconds",
            "setup_command",
            "copy_files",
            "link_files",
            "merge_strategy",
            "batch_size",
            "auto_rebase",
        ]

    def clean(self):
        data = super().clean()
        if self.instance.pk is None and data.get("path") and data.get("target_branch"):
            try:
                resolved = services.repository_location_validate(
                    path=data["path"],
                    target_branch=data["target_branch"],
                    init_if_missing=data.get("init_if_missing", False),
                )
            except ValidationError as exc:
                raise ValidationError(exc.message_dict) from exc
            data["path"] = str(resolved)
        return data


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    form = RepositoryForm
    list_display = [
        "name",
        "path",
        "target_branch",
        "merge_strategy",
        "batch_size",
        "rig_count",
        "updated_at",
    ]
    list_filter = ["merge_strategy", "auto_rebase"]
    search_fields = ["name", "path"]
    readonly_fields = ["created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # A registered repository's location is fixed: rigs and worktrees point into it.
        return ["path", "init_if_missing", *self.readonly_fields] if obj else self.readonly_fields

    def save_model(self, request, obj: Repository, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        fields = {f: form.cleaned_data[f] for f in form.cleaned_data}
        saved = services.repository_register(**fields)
        obj.pk, obj.created_at, obj.updated_at = saved.pk, saved.created_at, saved.updated_at

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_rig_count=Count("rigs"))

    @admin.display(description="rigs", ordering="_rig_count")
    def rig_count(self, obj: Repository) -> int:
        return obj._rig_count


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "runtime",
        "is_active",
        "token_prefix",
        "token_expires_at",
        "last_heartbeat_at",
        "updated_at",
    ]
    list_filter = ["runtime", "is_active"]
    search_fields = ["name"]
    readonly_fields = ["token_prefix", "last_heartbeat_at", "created_at", "updated_at"]
    actions = ["rotate_token", "revoke_token"]

    def save_model(self, request, obj: Agent, form, change: bool) -> None:
        token = None if change else obj.issue_token()
        super().save_model(request, obj, form, change)
        if token:
            show_token_once(self, request, obj.name, token)

    @admin.action(description="Issue a new token (shown once)")
    def rotate_token(self, request, queryset) -> None:
        for agent in queryset:
            token = services.agent_rotate_token(agent=agent)
            self.message_user(request, f"New token for {agent.name}: {token}", messages.WARNING)

    @admin.action(description="Revoke token")
    def revoke_token(self, request, queryset) -> None:
        run_service_action(
            self, request, queryset, lambda a: services.agent_revoke_token(agent=a), "Revoked"
        )


class MergeRequestInline(admin.TabularInline):
    model = MergeRequest
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["state", "source_commit", "merge_commit", "created_at", "finished_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Rig)
class RigAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "repository",
        "agent",
        "state",
        "branch",
        "ahead",
        "behind",
        "dirty",
        "last_heartbeat_at",
        "updated_at",
    ]
    list_filter = ["state", "repository", "sparse", "agent"]
    list_select_related = ["repository", "agent"]
    search_fields = ["slug", "branch", "agent__name", "repository__name"]
    readonly_fields = [
        "state",
        "branch",
        "worktree_path",
        "base_commit",
        "head_commit",
        "target_commit",
        "ahead",
        "behind",
        "dirty",
        "changed_files_list",
        "progress_bar",
        "failure_reason",
        "provision_attempts",
        "provision_seconds",
        "provisioned_at",
        "last_heartbeat_at",
        "last_synced_at",
        "created_at",
        "updated_at",
    ]
    inlines = [MergeRequestInline]
    actions = ["retry", "sync", "teardown", "force_teardown"]
    fields = [
        "slug",
        "repository",
        "agent",
        "base_ref",
        "scope",
        "watch",
        "sparse",
        "role",
        "notify_level",
        *readonly_fields,
    ]

    def save_model(self, request, obj: Rig, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        saved = services.rig_request(
            repository=data["repository"],
            slug=data["slug"],
            agent=data.get("agent"),
            scope=data.get("scope") or [],
            watch=data.get("watch") or [],
            sparse=data.get("sparse", False),
            base_ref=data.get("base_ref", ""),
            role=data.get("role", ""),
        )
        obj.pk = saved.pk

    @admin.action(description="Retry provisioning (failed rigs)")
    def retry(self, request, queryset) -> None:
        run_service_action(self, request, queryset, lambda r: services.rig_retry(rig=r), "Retried")

    @admin.action(description="Sync from disk now")
    def sync(self, request, queryset) -> None:
        run_service_action(
            self, request, queryset, lambda r: services.rig_sync_request(rig=r), "Queued sync of"
        )

    @admin.action(description="Tear down (refused if work would be lost)")
    def teardown(self, request, queryset) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda r: services.rig_teardown_request(rig=r, requested_by=str(request.user)),
            "Queued teardown of",
        )

    @admin.action(description="Force tear down (saves work under refs/gastown/archive/)")
    def force_teardown(self, request, queryset) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda r: services.rig_teardown_request(
                rig=r, force=True, requested_by=str(request.user)
            ),
            "Queued forced teardown of",
        )

    def get_readonly_fields(self, request, obj=None):
        # Identity fields are fixed once a rig exists (they name its branch and worktree).
        fixed = ["slug", "repository", "base_ref", "sparse"] if obj else []
        return [*fixed, *self.readonly_fields]

    @admin.display(description="changed files")
    def changed_files_list(self, obj: Rig) -> str:
        files = obj.changed_files or []
        return ", ".join(f.get("path", "") if isinstance(f, dict) else str(f) for f in files) or "-"

    @admin.display(description="progress")
    def progress_bar(self, obj: Rig):
        return format_html(
            '<progress max="100" value="{}"></progress> {}% {}',
            obj.progress,
            obj.progress,
            obj.progress_label,
        )


@admin.register(MergeRequest)
class MergeRequestAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "rig",
        "repository",
        "target_branch",
        "state",
        "priority",
        "source_short",
        "merge_short",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "repository", "target_branch"]
    list_select_related = ["rig", "rig__repository", "repository"]
    search_fields = ["rig__slug", "source_commit", "merge_commit"]
    readonly_fields = [
        "rig",
        "repository",
        "target_branch",
        "state",
        "source_commit",
        "target_commit",
        "merge_commit",
        "conflicts",
        "changed_paths",
        "gate_exit_code",
        "gate_log_tail",
        "gate_seconds",
        "batch_id",
        "claimed_by",
        "claim_expires_at",
        "attempts",
        "reason",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
    ]
    actions = ["cancel"]

    def has_add_permission(self, request) -> bool:
        return False  # merge requests are made by asking to land a rig (API, CLI, board)

    @admin.display(description="source")
    def source_short(self, obj: MergeRequest) -> str:
        return obj.source_commit[:10]

    @admin.display(description="merge")
    def merge_short(self, obj: MergeRequest) -> str:
        return obj.merge_commit[:10]

    @admin.action(description="Cancel selected merge requests")
    def cancel(self, request, queryset) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda mr: services.merge_request_cancel(
                merge_request=mr, reason=f"cancelled by {request.user}"
            ),
            "Cancelled",
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Personal API tokens for scripts: shown once when added, revocable."""

    list_display = [
        "token_prefix",
        "user",
        "name",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "created_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user"]
    search_fields = ["user__username", "name", "token_prefix"]
    readonly_fields = ["token_prefix", "revoked_at", "last_used_at", "created_at"]
    autocomplete_fields = ["user"]
    actions = ["revoke"]

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        token = None if change else obj.issue()
        super().save_model(request, obj, form, change)
        if token:
            show_token_once(self, request, str(obj.user), token)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
