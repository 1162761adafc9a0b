from django.contrib import admin

from events.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "repository_id", "convoy_id", "rig_id", "created_at"]
    list_filter = ["kind"]
    search_fields = ["kind"]
    readonly_fields = ["kind", "payload", "repository_id", "convoy_id", "rig_id", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the log is append-only
