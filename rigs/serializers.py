from rest_framework import serializers

from rigs.models import Repository


class RepositorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Repository
        fields = [
            "id",
            "name",
            "path",
            "target_branch",
            "gate_command",
            "gate_timeout_seconds",
            "setup_command",
            "copy_files",
            "link_files",
            "merge_strategy",
            "batch_size",
            "auto_rebase",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
