from rest_framework import serializers

from common.api import InputSerializer, KnownFields
from rigs.models import Agent, MergeApproval, MergeRequest, Repository, Rig
from rigs.validators import validate_branch_name, validate_globs, validate_slug

ADMIN_ONLY = "Admin only (a command the server runs): anyone else setting it gets 403."


class RepositorySerializer(KnownFields, serializers.ModelSerializer):
    class Meta:
        model = Repository
        fields = [
            "id",
            "name",
            "path",
            "target_branch",
            "init_if_missing",
            "gate_command",
            "gate_timeout_seconds",
            "setup_command",
            "copy_files",
            "link_files",
            "merge_strategy",
            "batch_size",
            "auto_rebase",
            "review_required",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        # Uniqueness is checked by the service (one place, with a clear message). The command
        # fields are run (or copied) by the server: only admins may set them
        # (rigs.permissions.command_fields_check; anyone else gets 403 naming the field).
        extra_kwargs = {
            "name": {"validators": [validate_slug]},
            "path": {"validators": []},
            **{
                name: {"help_text": f"{ADMIN_ONLY} {Repository._meta.get_field(name).help_text}"}
                for name in ("gate_command", "setup_command", "copy_files", "link_files")
            },
        }


class ChangedFileSerializer(serializers.Serializer):
    path = serializers.CharField()
    added = serializers.IntegerField(allow_null=True)
    deleted = serializers.IntegerField(allow_null=True)
    status = serializers.CharField()


class RigSerializer(KnownFields, serializers.ModelSerializer):
    repository = serializers.PrimaryKeyRelatedField(queryset=Repository.objects.all())
    agent = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True, help_text="the agent's name"
    )
    changed_files = ChangedFileSerializer(many=True, read_only=True)

    class Meta:
        model = Rig
        fields = [
            "id",
            "slug",
            "repository",
            "agent",
            "state",
            "branch",
            "worktree_path",
            "base_ref",
            "base_commit",
            "head_commit",
            "target_commit",
            "ahead",
            "behind",
            "dirty",
            "changed_files",
            "scope",
            "watch",
            "sparse",
            "role",
            "notify_level",
            "progress",
            "progress_label",
            "failure_reason",
            "provision_seconds",
            "provisioned_at",
            "last_heartbeat_at",
            "last_synced_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            f
            for f in fields
            if f
            not in (
                "slug",
                "repository",
                "base_ref",
                "scope",
                "watch",
                "sparse",
                "role",
                "notify_level",
            )
        ]


def _branch_or_blank(value: str) -> None:
    if value:
        validate_branch_name(value)


class RigCreateSerializer(InputSerializer):
    # (the service checks these again; here they are named with the other fields' problems)
    slug = serializers.CharField(max_length=63, validators=[validate_slug])
    repository = serializers.PrimaryKeyRelatedField(queryset=Repository.objects.all())
    agent = serializers.CharField(
        required=False, allow_blank=True, help_text="Agent name (defaults to the caller)."
    )
    scope = serializers.ListField(
        child=serializers.CharField(), required=False, default=list, validators=[validate_globs]
    )
    watch = serializers.ListField(
        child=serializers.CharField(), required=False, default=list, validators=[validate_globs]
    )
    sparse = serializers.BooleanField(required=False, default=False)
    base_ref = serializers.CharField(
        required=False, allow_blank=True, default="", validators=[_branch_or_blank]
    )
    role = serializers.CharField(required=False, allow_blank=True, default="")


class TeardownSerializer(InputSerializer):
    force = serializers.BooleanField(required=False, default=False)


class MergeApprovalSerializer(serializers.ModelSerializer):
    class Meta:
        model = MergeApproval
        fields = ["id", "commit", "verdict", "by", "note", "created_at"]
        read_only_fields = fields


class MergeRequestSerializer(serializers.ModelSerializer):
    approvals = MergeApprovalSerializer(
        many=True, read_only=True, help_text="the review audit trail: who approved which commit"
    )

    class Meta:
        model = MergeRequest
        fields = [
            "id",
            "rig",
            "repository",
            "source_branch",
            "target_branch",
            "state",
            "priority",
            "source_commit",
            "target_commit",
            "merge_commit",
            "conflicts",
            "changed_paths",
            "gate_exit_code",
            "gate_log_tail",
            "gate_seconds",
            "attempts",
            "reason",
            "requested_by",
            "forced",
            "reviews_required",
            "approvals",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields


class MergeRequestReviewSerializer(InputSerializer):
    commit = serializers.RegexField(
        r"^[0-9a-f]{40}$", help_text="the source commit the diff showed (its full id)"
    )
    note = serializers.CharField(
        required=False, allow_blank=True, max_length=4000, help_text="what to change, or a remark"
    )


class MergeRequestCreateSerializer(InputSerializer):
    priority = serializers.IntegerField(
        required=False, default=2, min_value=0, max_value=4, help_text="0 is most urgent."
    )
    force = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Queue it although the rig's leg has open or in-progress beads or its worktree "
        "has uncommitted changes (else 409 `open_work`); recorded as `forced`.",
    )


class AgentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Agent
        fields = ["id", "name", "runtime", "is_active", "last_heartbeat_at", "token_expires_at"]
        read_only_fields = fields
