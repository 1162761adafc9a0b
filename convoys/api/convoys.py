"""Convoys: list (each with its legs and progress), create, import a plan, detail, launch,
cancel."""

from functools import partial

from django_filters import rest_framework as filters
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import FieldErrors
from convoys import services
from convoys.api.base import body, get_object
from convoys.models import Convoy
from convoys.selectors import convoy_rollup, convoys_rollups
from convoys.serializers import (
    ConvoyCancelSerializer,
    ConvoyCreateSerializer,
    ConvoyDetailSerializer,
    ConvoyImportErrorSerializer,
    ConvoyImportResultSerializer,
    ConvoyImportSerializer,
    ConvoySerializer,
)
from rigs.api import IdFilter
from rigs.models import Repository, Rig
from rigs.permissions import ReadOrOperator


def _detail(convoy: Convoy) -> dict:
    convoy.rollup = convoy_rollup(convoy)
    return ConvoyDetailSerializer(convoy).data


class ConvoyFilter(filters.FilterSet):
    state = filters.MultipleChoiceFilter(choices=Convoy.State.choices)
    repository = IdFilter(field_name="repository_id")

    class Meta:
        model = Convoy
        fields = ["state", "repository"]


@extend_schema_view(
    get=extend_schema(
        summary="List convoys",
        description="Convoys, newest first, each with its legs and progress. `?search=` looks "
        "in titles and slugs and for a leg's key (as the board's search box); `?ordering=` "
        "sorts.",
    )
)
class ConvoyListView(generics.ListCreateAPIView):
    """Convoys, newest first, each with its legs and progress. Operators create them."""

    serializer_class = ConvoySerializer
    permission_classes = [ReadOrOperator]
    filterset_class = ConvoyFilter
    queryset = Convoy.objects.order_by("-created_at", "-id")
    search_fields = ["title", "slug", "=legs__key"]
    ordering_fields = [
        "created_at",
        "updated_at",
        "title",
        "state",
        "launched_at",
        "landed_at",
        "spent_usd",
    ]

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        rollups = convoys_rollups(page)
        for convoy in page:
            convoy.rollup = rollups[convoy.id]
        return self.get_paginated_response(ConvoySerializer(page, many=True).data)

    @extend_schema(
        summary="Create a convoy",
        description="A draft convoy and its legs (operators). Every bad field is named at once "
        "(`legs[1].depends_on`); nothing is created then.",
        request=ConvoyCreateSerializer,
        responses={201: ConvoyDetailSerializer},
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        errors = FieldErrors()  # bad fields, an unknown repository, unknown rigs: named together
        data = body(ConvoyCreateSerializer, request, errors=errors)
        if "repository" in data:
            get = partial(get_object, Repository.objects.all(), "repository", data["repository"])
            data["repository"] = errors.check(partial(get, "repository"))
        data["legs"] = [dict(leg) for leg in data.get("legs", [])]
        if errors.detail:  # (else the service names every leg's problem, unknown rigs too)
            rig_ids = {leg["rig"] for leg in data["legs"] if leg.get("rig") is not None}
            known = set(Rig.objects.filter(pk__in=rig_ids).values_list("pk", flat=True))
            for index, leg in enumerate(data["legs"]):
                if leg.get("rig") is not None and leg["rig"] not in known:
                    field = f"legs[{index}].rig"
                    errors.add(ValidationError({field: f"rig {leg['rig']} does not exist."}))
        errors.raise_any()
        data["slug"] = data["slug"] or None
        convoy = services.convoy_create(**data, created_by=request.user)
        return Response(_detail(convoy), status=status.HTTP_201_CREATED)


INVALID_PLAN = OpenApiExample(
    "an invalid plan",
    response_only=True,
    status_codes=["400"],
    value={
        "error": {
            "code": "invalid_plan",
            "message": "the plan has 2 errors; nothing was created.\n"
            "line 4: unknown rig 'rig-dbb'.\nline 9: no leg 'ap' in this plan.",
            "field": "plan",
            "errors": [
                {
                    "line": 4,
                    "field": "legs[0].rig",
                    "code": "invalid",
                    "message": "unknown rig 'rig-dbb'.",
                },
                {
                    "line": 9,
                    "field": "legs[1].depends_on",
                    "code": "invalid",
                    "message": "no leg 'ap' in this plan.",
                },
            ],
            "count": 2,
        }
    },
)


_TOO_LARGE = "the request body is larger than 1048576 bytes (GASTOWN_MAX_BODY_BYTES)."
TOO_LARGE = OpenApiExample(
    "a plan over the body limit",
    response_only=True,
    status_codes=["413"],
    value={
        "error": {
            "code": "too_large",
            "message": _TOO_LARGE,
            "field": None,
            "errors": [{"field": None, "code": "too_large", "message": _TOO_LARGE}],
        }
    },
)


class ConvoyImportView(APIView):
    """A draft convoy from a Markdown plan (docs/convoys.md, "Plan format"): its legs, their
    briefs and acceptance checklists, and each `- [ ]` task as a bead in the leg's rig;
    launched too with `launch`. An invalid plan is one 400 listing every error with its line
    (`error.errors`), and nothing is created."""

    permission_classes = [ReadOrOperator]

    @extend_schema(
        summary="Import a convoy from a Markdown plan",
        request=ConvoyImportSerializer,
        examples=[INVALID_PLAN, TOO_LARGE],
        responses={
            201: ConvoyImportResultSerializer,
            400: OpenApiResponse(
                ConvoyImportErrorSerializer,
                description="Bad input; an invalid plan (`invalid_plan`) lists every error "
                "with its line in `error.errors`.",
            ),
            413: OpenApiResponse(
                ConvoyImportErrorSerializer,
                description="The body (the plan) is larger than GASTOWN_MAX_BODY_BYTES.",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        data = body(ConvoyImportSerializer, request)
        repository = get_object(
            Repository.objects.all(), "repository", data["repository"], "repository"
        )
        try:
            convoy, beads = services.convoy_import(
                repository=repository,
                plan=data["plan"],
                launch=data["launch"],
                created_by=request.user,
            )
        except services.PlanInvalid as exc:
            return Response(exc.as_body(), status=exc.status)
        convoy.rollup = convoy_rollup(convoy)
        convoy.beads = beads
        return Response(ConvoyImportResultSerializer(convoy).data, status=status.HTTP_201_CREATED)


class ConvoyDetailView(APIView):
    """A convoy with its legs (`depends_on` keys, wave, rig), progress, what blocks which leg."""

    @extend_schema(summary="Show a convoy", responses={200: ConvoyDetailSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(_detail(get_object(Convoy.objects.all(), "convoy", pk)))


class ConvoyLaunchView(APIView):
    """draft → launched: provisions the missing rigs and hands wave 1 to its rigs."""

    permission_classes = [ReadOrOperator]

    @extend_schema(
        summary="Launch a draft convoy", request=None, responses={200: ConvoyDetailSerializer}
    )
    def post(self, request: Request, pk: int) -> Response:
        convoy = services.convoy_launch(convoy=get_object(Convoy.objects.all(), "convoy", pk))
        return Response(_detail(convoy))


class ConvoyCancelView(APIView):
    """Cancel a convoy (operators), with a reason: its open legs are cancelled, and so is its
    landing merge request while it waits; what already landed stays."""

    permission_classes = [ReadOrOperator]

    @extend_schema(
        summary="Cancel a convoy",
        request=ConvoyCancelSerializer,
        responses={200: ConvoyDetailSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        convoy = get_object(Convoy.objects.all(), "convoy", pk)
        data = body(ConvoyCancelSerializer, request)
        convoy = services.convoy_cancel(convoy=convoy, reason=data["reason"])
        return Response(_detail(convoy))
