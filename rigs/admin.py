"""The admin for repositories, agents, rigs, merge requests and personal tokens.

Every change goes through a service (which validates and appends its event): `save_model`
calls `repository_update`, `agent_update`, `rig_update` or `merge_request_prioritize` with the
fields the form changed; state and what workers record are read-only here. A refusal from a
service is shown as a message, never a 500.

Tokens are shown once, on the response page itself (`token_once_response`): never in a message,
which would carry them in the (signed, not encrypted) messages cookie."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from common.admin import run_service_action
from common.errors import Refusal, error_text
from rigs import services
from rigs.models import Agent, ApiToken, MergeApproval, MergeRequest, Repository, Rig

TOKENS_ATTR = "_gastown_tokens_to_show"


def show_token_once(request, owner: str, token: str) -> None:
    """Remember a new token for this request's response page (`token_once_response`)."""
    tokens = getattr(request, TOKENS_ATTR, None) or []
    tokens.append((owner, token))
    setattr(request, TOKENS_ATTR, tokens)


def token_once_response(modeladmin, request, tokens, continue_url: str) -> TemplateResponse:
    """The one page a token is ever shown on. Not cached, not stored."""
    response = TemplateResponse(
        request,
        "admin/rigs/token_once.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": "Token (shown once)",
            "opts": modeladmin.model._meta,
            "tokens": tokens,
            "continue_url": continue_url,
        },
    )
    response["Cache-Control"] = "no-store"
    return response


class _ServiceRefused(Exception):
    """A service refused a change the admin form had accepted (raised out of the form's
    transaction, so nothing of it is saved)."""


def _service_call(call):
    try:
        return call()
    except (Refusal, ValidationError) as exc:
        raise _ServiceRefused(error_text(exc)) from exc


class ServiceModelAdmin(admin.ModelAdmin):
    """Saves through services: a refusal rolls the whole form back and comes back as a
    message on the same page."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _ServiceRefused as exc:
            self.message_user(request, f"Not saved: {exc}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def response_add(self, request, obj, post_url_continue=None):
        tokens = getattr(request, TOKENS_ATTR, None)
        if tokens:
            return token_once_response(self, request, tokens, self._change_url(obj))
        return super().response_add(request, obj, post_url_continue)

    def _change_url(self, obj) -> str:
        meta = self.model._meta
        return reverse(
            f"admin:{meta.app_label}_{meta.model_name}_change",
            args=[obj.pk],
            current_app=self.admin_site.name,
        )

    def _changelist_url(self) -> str:
        meta = self.model._meta
        return reverse(
            f"admin:{meta.app_label}_{meta.model_name}_changelist", current_app=self.admin_site.name
        )

    @staticmethod
    def changed(form, editable) -> dict:
        return {name: form.cleaned_data[name] for name in form.changed_data if name in editable}


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
            "review_required",
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
class RepositoryAdmin(ServiceModelAdmin):
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
            changes = self.changed(form, services.REPOSITORY_EDITABLE)
            current = Repository.objects.get(pk=obj.pk)
            _service_call(lambda: services.repository_update(repository=current, **changes))
            return
        fields = {f: form.cleaned_data[f] for f in form.cleaned_data}
        saved = _service_call(lambda: services.repository_register(**fields))
        obj.pk, obj.created_at, obj.updated_at = saved.pk, saved.created_at, saved.updated_at

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_rig_count=Count("rigs"))

    @admin.display(description="rigs", ordering="_rig_count")
    def rig_count(self, obj: Repository) -> int:
        return obj._rig_count


@admin.register(Agent)
class AgentAdmin(ServiceModelAdmin):
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
        data = form.cleaned_data
        if change:
            changes = self.changed(form, services.AGENT_EDITABLE)
            current = Agent.objects.get(pk=obj.pk)
            _service_call(lambda: services.agent_update(agent=current, **changes))
            return
        agent, token = _service_call(
            lambda: services.agent_create(
                name=data["name"],
                runtime=data.get("runtime") or Agent.Runtime.CUSTOM,
                runtime_command=data.get("runtime_command", ""),
                token_expires_at=data.get("token_expires_at"),
                is_active=data.get("is_active", True),
            )
        )
        obj.pk, obj.token_prefix = agent.pk, agent.token_prefix
        obj.created_at, obj.updated_at = agent.created_at, agent.updated_at
        show_token_once(request, agent.name, token)

    @admin.action(description="Issue a new token (shown once)")
    def rotate_token(self, request, queryset):
        for agent in queryset:
            show_token_once(request, agent.name, services.agent_rotate_token(agent=agent))
        tokens = getattr(request, TOKENS_ATTR, None)
        if tokens:
            return token_once_response(self, request, tokens, self._changelist_url())
        return None

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
class RigAdmin(ServiceModelAdmin):
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
            changes = self.changed(form, services.RIG_EDITABLE)
            current = Rig.objects.select_related("repository").get(pk=obj.pk)
            _service_call(lambda: services.rig_update(rig=current, **changes))
            return
        data = form.cleaned_data
        saved = _service_call(
            lambda: services.rig_request(
                repository=data["repository"],
                slug=data["slug"],
                agent=data.get("agent"),
                scope=data.get("scope") or [],
                watch=data.get("watch") or [],
                sparse=data.get("sparse", False),
                base_ref=data.get("base_ref", ""),
                role=data.get("role", ""),
            )
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


@admin.register(MergeApproval)
class MergeApprovalAdmin(admin.ModelAdmin):
    """Read-only: who approved (or asked for changes on) which commit of which merge request."""

    list_display = ["id", "merge_request", "by", "verdict", "commit", "created_at"]
    list_filter = ["verdict"]
    search_fields = ["by", "commit"]
    fields = ["merge_request", "by", "verdict", "commit", "note", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(MergeRequest)
class MergeRequestAdmin(ServiceModelAdmin):
    """Read-only but for a queued request's priority (merge_request_prioritize); cancelling is
    an action (merge_request_cancel)."""

    list_display = [
        "id",
        "rig",
        "repository",
        "target_branch",
        "state",
        "priority",
        "source_short",
        "merge_short",
        "forced",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "forced", "repository", "target_branch"]
    list_select_related = ["rig", "rig__repository", "repository"]
    search_fields = ["rig__slug", "source_commit", "merge_commit"]
    readonly_fields = [
        "rig",
        "repository",
        "source_branch",
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
        "forced",
        "reviews_required",
        "review_trail",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
    ]
    actions = ["cancel"]

    @admin.display(description="Review audit trail")
    def review_trail(self, obj: MergeRequest) -> str:
        """Who approved (or asked for changes on) which commit, when: written by operators on
        the board or the API, never edited."""
        rows = [
            f"{a.created_at:%Y-%m-%d %H:%M:%S} {a.by} {a.get_verdict_display()} {a.commit[:10]}"
            + (f": {a.note}" if a.note else "")
            for a in obj.approvals.all()
        ]
        return "\n".join(rows) or "-"

    def has_add_permission(self, request) -> bool:
        return False  # merge requests are made by asking to land a rig (API, CLI, board)

    def save_model(self, request, obj: MergeRequest, form, change: bool) -> None:
        if "priority" in form.changed_data:
            current = MergeRequest.objects.get(pk=obj.pk)
            priority = form.cleaned_data["priority"]
            _service_call(
                lambda: services.merge_request_prioritize(merge_request=current, priority=priority)
            )

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
class ApiTokenAdmin(ServiceModelAdmin):
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

    def get_readonly_fields(self, request, obj=None):
        # A token acts as its user: it cannot be handed to someone else.
        return ["user", *self.readonly_fields] if obj else self.readonly_fields

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)  # its name and expiry only
            return
        data = form.cleaned_data
        token, raw = services.api_token_create(
            user=data["user"], name=data.get("name", ""), expires_at=data.get("expires_at")
        )
        obj.pk, obj.token_prefix, obj.created_at = token.pk, token.token_prefix, token.created_at
        show_token_once(request, str(token.user), raw)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset) -> None:
        count = services.api_tokens_revoke(tokens=queryset)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
