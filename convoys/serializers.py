"""API shapes for convoys' resources (the field names are the contract in DESIGN.md)."""

from rest_framework import serializers

from convoys.models import Bead


class BeadSerializer(serializers.ModelSerializer):
    assignee = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Bead
        fields = [
            "id",
            "short_id",
            "rig",
            "leg",
            "convoy",
            "repository",
            "title",
            "description",
            "acceptance_criteria",
            "status",
            "priority",
            "type",
            "assignee",
            "labels",
            "defer_until",
            "close_reason",
            "claimed_at",
            "closed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
