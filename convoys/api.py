"""Thin DRF views for beads (and, later, convoys and notifications): selectors do the reading."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

from convoys.models import Bead
from convoys.selectors import beads_list, beads_ready
from convoys.serializers import BeadSerializer

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def _flag(params, name: str) -> bool:
    value = params.get(name, "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValidationError({name: f"'{value}' is not a boolean; use true or false."})
    return value in _TRUE


def _id(params, name: str) -> int | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValidationError({name: f"'{value}' is not an id (a positive integer)."})
    return int(value)


_ID_FILTERS = ["rig", "leg", "convoy", "repository"]


class BeadPagination(LimitOffsetPagination):
    """limit/offset like the rest of the API, but the bead query runs once: its ids (an int
    each: the count is their number), then the page by primary key. The ready query is the
    expensive part; the default pagination would run it twice (COUNT, then the page)."""

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return None
        self.offset = self.get_offset(request)
        ids = list(queryset.values_list("pk", flat=True))
        self.count = len(ids)
        if self.count > self.limit and self.template is not None:
            self.display_page_controls = True
        page_ids = ids[self.offset : self.offset + self.limit]
        rows = Bead.objects.select_related("assignee").in_bulk(page_ids)
        return [rows[pk] for pk in page_ids if pk in rows]


@extend_schema(
    parameters=[
        *(
            OpenApiParameter(n, OpenApiTypes.INT, description=f"only this {n}'s beads")
            for n in _ID_FILTERS
        ),
        OpenApiParameter(
            "ready", OpenApiTypes.BOOL, description="only ready beads, most urgent first"
        ),
        OpenApiParameter(
            "pool", OpenApiTypes.BOOL, description="only beads waiting in a pool (no rig)"
        ),
        OpenApiParameter(
            "status", OpenApiTypes.STR, description="only this status (not with ready)"
        ),
    ]
)
class BeadListView(generics.ListAPIView):
    """`GET beads/?rig=&ready=true`: a rig's (or a convoy's, a repository's, a pool's) beads."""

    serializer_class = BeadSerializer
    pagination_class = BeadPagination
    filter_backends: list = []  # filtering is explicit below, through the selectors

    def get_queryset(self):
        params = self.request.query_params
        scope = {name: _id(params, name) for name in _ID_FILTERS}
        pool = _flag(params, "pool")
        if _flag(params, "ready"):
            qs = beads_ready(**scope, pool=pool)
        else:
            status = params.get("status") or None
            if status and status not in Bead.Status.values:
                raise ValidationError(
                    {"status": f"'{status}' is not one of {', '.join(Bead.Status.values)}."}
                )
            qs = beads_list(**scope, pool=pool, status=status)
        return qs
