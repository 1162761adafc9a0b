from django import forms
from django.contrib import admin
from django.db.models import Count, Q

from common.admin import run_service_action
from common.forms import AsciiNumbers
from convoys import services
from convoys.models import (
    Bead,
    BeadComment,
    BeadDependency,
    Convoy,
    Leg,
    LegDependency,
    ReviewComment,
)
from convoys.services import reviews
from rigs.admin import RigAdmin
from rigs.models import Rig


class LegInline(admin.TabularInline):
    model = Leg
    extra = 0
    fields = ["key", "title", "rig", "agent", "state", "position"]
    readonly_fields = ["state"]
    autocomplete_fields = ["rig", "agent"]
    show_change_link = True


class ConvoyAdminForm(AsciiNumbers, forms.ModelForm):
    class Meta:
        model = Convoy
        fields = "__all__"  # noqa: DJ007 (the admin picks the fields shown)


@admin.register(Convoy)
class ConvoyAdmin(admin.ModelAdmin):
    form = ConvoyAdminForm
    list_display = ["title", "slug", "repository", "state", "progress", "created_at", "updated_at"]
    list_filter = ["state", "repository"]
    list_select_related = ["repository"]
    search_fields = ["title", "slug", "description"]
    readonly_fields = [
        "state",
        "progress",
        "spent_usd",
        "launched_at",
        "landed_at",
        "created_at",
        "updated_at",
    ]
    prepopulated_fields = {"slug": ["title"]}
    inlines = [LegInline]
    actions = ["cancel"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _legs=Count("legs"),
                _landed=Count("legs", filter=Q(legs__state=Leg.State.LANDED)),
            )
        )

    @admin.display(description="progress")
    def progress(self, obj: Convoy) -> str:
        total = getattr(obj, "_legs", None)
        if total is None:
            total = obj.legs.count()
            landed = obj.legs.filter(state=Leg.State.LANDED).count()
        else:
            landed = obj._landed
        return f"{landed}/{total} legs landed"

    @admin.action(description="Cancel selected convoys")
    def cancel(self, request, queryset) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda c: services.convoy_cancel(convoy=c, reason=f"cancelled by {request.user}"),
            "Cancelled",
        )


class LegDependencyInline(admin.TabularInline):
    model = LegDependency
    fk_name = "leg"
    extra = 0
    autocomplete_fields = ["depends_on"]


class AcceptanceField(forms.CharField):
    """A leg's acceptance checklist edited as text: one item a line."""

    widget = forms.Textarea(attrs={"rows": 5})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value) -> list[str]:
        return [line.strip() for line in (value or "").splitlines() if line.strip()]


class LegAdminForm(forms.ModelForm):
    acceptance = AcceptanceField(
        required=False, help_text="A checklist: what must be true when the leg is done; one a line."
    )

    class Meta:
        model = Leg
        fields = [
            "convoy",
            "key",
            "title",
            "description",
            "acceptance",
            "rig",
            "agent",
            "scope",
            "watch",
            "state",
            "position",
            "landed_merge_request",
        ]


@admin.register(Leg)
class LegAdmin(admin.ModelAdmin):
    form = LegAdminForm
    list_display = ["key", "title", "convoy", "rig", "agent", "state", "updated_at"]
    list_filter = ["state", "convoy"]
    list_select_related = ["convoy", "rig", "rig__repository", "agent"]
    search_fields = ["key", "title", "convoy__title", "rig__slug"]
    readonly_fields = ["state", "landed_merge_request", "landed_at", "created_at", "updated_at"]
    autocomplete_fields = ["convoy", "rig", "agent"]
    inlines = [LegDependencyInline]


class BeadDependencyInline(admin.TabularInline):
    model = BeadDependency
    fk_name = "bead"
    extra = 0
    autocomplete_fields = ["depends_on"]


class BeadCommentInline(admin.TabularInline):
    """Comments are written by agents and people through the API and the board (`gt
    comment`), and by Gas Town (a lapsed claim): read here, never edited."""

    model = BeadComment
    extra = 0
    fields = ["author", "text", "created_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Bead)
class BeadAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "title",
        "status",
        "priority",
        "type",
        "rig",
        "leg",
        "assignee",
        "updated_at",
    ]
    list_filter = ["status", "type", "priority", "rig__repository"]
    list_select_related = ["rig", "rig__repository", "leg", "leg__convoy", "assignee"]
    search_fields = ["short_id", "title", "description"]
    readonly_fields = [
        "short_id",
        "status",
        "claimed_at",
        "lease_expires_at",
        "claimed_by_run_id",
        "closed_at",
        "created_at",
        "updated_at",
    ]
    autocomplete_fields = [
        "rig",
        "leg",
        "convoy",
        "repository",
        "assignee",
        "discovered_from_merge_request",
    ]
    inlines = [BeadDependencyInline, BeadCommentInline]
    actions = ["close", "reopen"]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else [BeadDependencyInline]  # no comments yet

    def save_model(self, request, obj: Bead, form, change: bool) -> None:
        if not obj.short_id:
            from convoys.beads import bead_short_id_new

            obj.short_id = bead_short_id_new()
        super().save_model(request, obj, form, change)

    @admin.action(description="Close selected beads")
    def close(self, request, queryset) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda b: services.bead_close(bead=b, reason=f"closed by {request.user}"),
            "Closed",
        )

    @admin.action(description="Reopen selected beads")
    def reopen(self, request, queryset) -> None:
        run_service_action(
            self, request, queryset, lambda b: services.bead_reopen(bead=b), "Reopened"
        )


class BeadInline(admin.TabularInline):
    model = Bead
    fk_name = "rig"
    extra = 0
    fields = ["short_id", "title", "status", "priority", "type", "assignee"]
    readonly_fields = ["short_id", "status"]
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # add beads from the bead page so they get an id and a home


# The rig page shows its beads; rigs cannot know convoys, so the inline is attached here.
admin.site.unregister(Rig)


@admin.register(Rig)
class RigWithBeadsAdmin(RigAdmin):
    inlines = [*RigAdmin.inlines, BeadInline]
    actions = [*RigAdmin.actions, "request_merge"]

    @admin.action(description="Request merge (queue the rig's branch to land)")
    def request_merge(self, request, queryset) -> None:
        run_service_action(
            self,
            request,
            queryset.select_related("repository"),
            lambda rig: services.rig_merge_request(rig=rig, requested_by=str(request.user)),
            "Queued merge of",
        )


@admin.register(ReviewComment)
class ReviewCommentAdmin(admin.ModelAdmin):
    """Review comments are written on the board's diff view and through the API (`gt review`),
    where their notices are sent: read here, never edited; admins may resolve them (through
    the service, so the agent's notice is resolved too)."""

    list_display = ["id", "rig", "author", "path", "line", "state", "created_at"]
    list_filter = ["state"]
    search_fields = ["text", "path", "author", "rig__slug"]
    list_select_related = ["rig", "rig__repository"]
    fields = ["rig", "merge_request", "reply_to", "author", "by_agent", "commit", "base_commit",
              "path", "side", "line", "excerpt", "text", "state", "resolved_by",
              "resolved_commit", "resolved_at", "created_at"]  # fmt: skip
    readonly_fields = fields
    actions = ["resolve"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Resolve (the agent's notice is resolved too)")
    def resolve(self, request, queryset) -> None:
        run_service_action(
            self,
            request,
            queryset.filter(state=ReviewComment.State.OPEN).select_related("rig"),
            lambda c: reviews.review_comment_resolve(comment=c, by=str(request.user)),
            "Resolved",
        )
