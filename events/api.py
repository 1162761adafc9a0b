"""`GET /api/v1/events/?after=<id>`: the event log in id order, for replay.

Who may read which events is not this app's to know (it sits below the apps that define roles
and rigs): `events.access` asks the policy named by settings.GASTOWN_EVENT_ACCESS."""

from functools import partial

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, pagination, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from common.api import FieldErrors
from common.filters import list_param, query_check
from common.params import optional_id, parse_count
from events import access
from events.models import Event


class EventSerializer(serializers.ModelSerializer):
    repository = serializers.IntegerField(source="repository_id", read_only=True, allow_null=True)
    convoy = serializers.IntegerField(source="convoy_id", read_only=True, allow_null=True)
    rig = serializers.IntegerField(source="rig_id", read_only=True, allow_null=True)

    class Meta:
        model = Event
        fields = ["id", "kind", "payload", "repository", "convoy", "rig", "created_at"]
        read_only_fields = fields


class AfterIdPagination(pagination.BasePagination):
    """Keyset pages for an append-only log: `?after=<last id seen>&limit=`; `next` carries the
    last id of this page (no count: the log only grows)."""

    default_limit = 100
    max_limit = 1000

    def check_params(self, request: Request, view=None) -> list[tuple[str, str]]:
        """The bad `after`/`limit` (for `common.filters.KnownQueryParams`)."""
        problems = []
        for name, check in (
            ("after", partial(optional_id, request.query_params, "after")),
            (
                "limit",
                partial(parse_count, request.query_params.get("limit", "0"), "limit", maximum=1),
            ),
        ):
            try:
                check()
            except ValidationError as exc:
                problems += [
                    (name, message) for message in exc.message_dict.get(name, exc.messages)
                ]
        return problems

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        after = optional_id(request.query_params, "after") or 0
        limit_text = request.query_params.get("limit", "").strip()
        limit = parse_count(limit_text, "limit", maximum=self.max_limit) if limit_text else 0
        limit = limit or self.default_limit
        rows = list(queryset.filter(id__gt=after).order_by("id")[: limit + 1])
        self.has_more = len(rows) > limit
        self.page = rows[:limit]
        self.last_id = self.page[-1].id if self.page else after
        return self.page

    def get_paginated_response(self, data) -> Response:
        url = self.request.build_absolute_uri()
        next_url = replace_query_param(url, "after", self.last_id) if self.has_more else None
        return Response({"next": next_url, "last_id": self.last_id, "results": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["next", "last_id", "results"],
            "properties": {
                "next": {"type": "string", "format": "uri", "nullable": True},
                "last_id": {"type": "integer", "description": "send it back as ?after="},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": "after",
                "in": "query",
                "required": False,
                "description": "only events with a larger id (the last one you saw)",
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": f"at most this many (default {self.default_limit}, "
                f"max {self.max_limit})",
                "schema": {"type": "integer", "minimum": 0},
            },
        ]


_SCOPES = ("convoy", "rig", "repository")


def _kind(value: str) -> str:
    if "\x00" in value:
        raise ValidationError({"kind": "null characters are not allowed."})
    return value[:60]


@extend_schema_view(get=extend_schema(summary="Read the event log"))
class EventListView(generics.ListAPIView):
    """The event log in id order, for replay: `?after=<last id you saw>`."""

    serializer_class = EventSerializer
    pagination_class = AfterIdPagination
    list_params = [
        *(list_param(n, f"only this {n}'s events", "integer", minimum=1) for n in _SCOPES),
        list_param("kind", "only this kind (`bead.status`)"),
    ]

    def get_queryset(self):
        params = self.request.query_params
        errors = FieldErrors()  # every bad parameter named at once
        scope = {name: errors.check(partial(optional_id, params, name)) for name in _SCOPES}
        kind = errors.check(partial(_kind, params.get("kind", "").strip()))
        errors.check(partial(query_check, self.request, Event.objects.none(), self))
        errors.raise_any()
        qs = Event.objects.all()
        for name, value in scope.items():
            if value is not None:
                qs = qs.filter(**{f"{name}_id": value})
        if kind:
            qs = qs.filter(kind=kind)
        return access.events_visible(self.request.user, qs)

    def list(self, request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        rows = (
            access.event_for(request.user, row) for row in self.get_serializer(page, many=True).data
        )
        return self.get_paginated_response([row for row in rows if row is not None])
