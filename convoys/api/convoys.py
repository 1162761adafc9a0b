"""Convoys: list (each with its legs and progress), create, import a plan, detail, launch,
cancel."""

from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

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
from rigs.models import Repository
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


class ConvoyListView(generics.ListCreateAPIView):
    """Convoys, newest first, each with its legs and progress. Operators create them."""

    serializer_class = ConvoySerializer
    permission_classes = [ReadOrOperator]
    filterset_class = ConvoyFilter
    queryset = Convoy.objects.order_by("-created_at", "-id")

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        rollups = convoys_rollups(page)
        for convoy in page:
            convoy.rollup = rollups[convoy.id]
        return self.get_paginated_response(ConvoySerializer(page, many=True).data)

    @extend_schema(request=ConvoyCreateSerializer, responses={201: ConvoyDetailSerializer})
    def post(self, request: Request, *args, **kwargs) -> Response:
        data = body(ConvoyCreateSerializer, request)
        data["repository"] = get_object(
            Repository.objects.all(), "repository", data["repository"], "repository"
        )
        data["legs"] = [dict(leg) for leg in data["legs"]]
        data["slug"] = data["slug"] or None
        convoy = services.convoy_create(**data, created_by=request.user)
        return Response(_detail(convoy), status=status.HTTP_201_CREATED)


class ConvoyImportView(APIView):
    """A draft convoy from a Markdown plan (docs/convoys.md, "Plan format"): its legs, their
    briefs and acceptance checklists, and each `- [ ]` task as a bead in the leg's rig;
    launched too with `launch`. An invalid plan is one 400 listing every error with its line
    (`error.errors`), and nothing is created."""

    permission_classes = [ReadOrOperator]

    @extend_schema(
        request=ConvoyImportSerializer,
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

    @extend_schema(responses={200: ConvoyDetailSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(_detail(get_object(Convoy.objects.all(), "convoy", pk)))


class ConvoyLaunchView(APIView):
    """draft → launched: provisions the missing rigs and hands wave 1 to its rigs."""

    permission_classes = [ReadOrOperator]

    @extend_schema(request=None, responses={200: ConvoyDetailSerializer})
    def post(self, request: Request, pk: int) -> Response:
        convoy = services.convoy_launch(convoy=get_object(Convoy.objects.all(), "convoy", pk))
        return Response(_detail(convoy))


class ConvoyCancelView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(request=ConvoyCancelSerializer, responses={200: ConvoyDetailSerializer})
    def post(self, request: Request, pk: int) -> Response:
        convoy = get_object(Convoy.objects.all(), "convoy", pk)
        data = body(ConvoyCancelSerializer, request)
        convoy = services.convoy_cancel(convoy=convoy, reason=data["reason"])
        return Response(_detail(convoy))
