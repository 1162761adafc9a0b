"""Thin DRF views for repositories, rigs and merge requests: they validate input and call
services. (Views that need convoys, like `me/` and a rig's merge request, live in convoys/api.py:
rigs knows nothing about convoys.)"""

import os
from pathlib import Path

from django import forms
from django.conf import settings
from django.db.models.functions import Length
from django.http import HttpResponse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, permissions, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import error_response
from rigs import services
from rigs.auth import calling_agent
from rigs.models import Agent, MergeRequest, Repository, Rig
from rigs.permissions import ReadOrOperator, RigWrite, command_fields_check, is_operator
from rigs.serializers import (
    MergeRequestSerializer,
    RepositorySerializer,
    RigCreateSerializer,
    RigSerializer,
    TeardownSerializer,
)

MAX_ID = 2**63 - 1


class IdFilter(filters.NumberFilter):
    """An id: a positive integer that fits the database (not a decimal, not 10**30)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class RepositoryListView(generics.ListCreateAPIView):
    queryset = Repository.objects.order_by("name")
    serializer_class = RepositorySerializer
    permission_classes = [ReadOrOperator]
    filterset_fields = ["name", "target_branch"]

    def post(self, request: Request, *args, **kwargs) -> Response:
        # Before validation: setting a command is refused whatever else the body holds.
        command_fields_check(request.user, request.data)
        return super().post(request, *args, **kwargs)

    def perform_create(self, serializer) -> None:
        serializer.instance = services.repository_register(**serializer.validated_data)


class RepositoryDetailView(generics.RetrieveAPIView):
    queryset = Repository.objects.all()
    serializer_class = RepositorySerializer


class RigFilter(filters.FilterSet):
    repository = IdFilter(field_name="repository_id")
    agent = filters.CharFilter(field_name="agent__name", help_text="the agent's name")
    state = filters.ChoiceFilter(choices=Rig.State.choices)
    slug = filters.CharFilter()

    class Meta:
        model = Rig
        fields = ["repository", "agent", "state", "slug"]


def worktree_ancestors(value: str) -> list[str]:
    """`?worktree=`: an absolute path, and every directory above it (the worktrees that may
    hold it), deepest first. 400 naming the parameter for a relative or odd path."""
    text = value.strip()
    if len(text) > 4096:
        raise ValidationError(
            {"worktree": f"at most 4,096 characters (this one has {len(text):,})."}
        )
    if not text.startswith("/") or "\x00" in text:
        raise ValidationError({"worktree": "give an absolute path (e.g. the current directory)."})
    path = Path(os.path.normpath(text))
    return [str(p) for p in (path, *path.parents)]


@extend_schema(
    parameters=[
        OpenApiParameter(
            "worktree",
            OpenApiTypes.STR,
            description="an absolute path: the rig whose worktree holds it (the deepest first); "
            "agents: only among their own rigs",
        )
    ],
    methods=["GET"],
)
class RigListView(generics.ListCreateAPIView):
    serializer_class = RigSerializer
    filterset_class = RigFilter
    queryset = Rig.objects.select_related("agent", "repository").order_by("id")

    def get_queryset(self):
        qs = super().get_queryset()
        value = self.request.query_params.get("worktree")
        if value is None or self.request.method != "GET":
            return qs
        ancestors = worktree_ancestors(value)
        agent = calling_agent(self.request)
        if agent is not None:  # an agent looks itself up: its own rigs only
            qs = qs.filter(agent=agent)
        qs = qs.filter(worktree_path__in=ancestors).exclude(state=Rig.State.ARCHIVED)
        return qs.order_by(Length("worktree_path").desc(), "-id")

    @extend_schema(request=RigCreateSerializer, responses={201: RigSerializer})
    def post(self, request: Request, *args, **kwargs) -> Response:
        command_fields_check(request.user, request.data)
        data = RigCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        me = calling_agent(request)
        agent_name = values.pop("agent", "") or ""
        if me is not None:
            if agent_name and agent_name != me.name:
                raise PermissionDenied("Agents may only request rigs for themselves.")
            agent = me
        elif is_operator(request.user):
            agent = Agent.objects.filter(name=agent_name).first() if agent_name else None
            if agent_name and agent is None:
                return error_response(
                    "not_found", f"agent '{agent_name}' does not exist.", 400, "agent"
                )
        else:
            raise PermissionDenied("Only operators and agents may request rigs.")
        rig = services.rig_request(agent=agent, **values)
        return Response(RigSerializer(rig).data, status=status.HTTP_201_CREATED)


class RigDetailView(generics.RetrieveUpdateAPIView):
    queryset = Rig.objects.select_related("agent", "repository")
    serializer_class = RigSerializer
    permission_classes = [RigWrite]
    http_method_names = ["get", "patch", "head", "options"]

    def patch(self, request: Request, *args, **kwargs) -> Response:
        command_fields_check(request.user, request.data)
        return super().patch(request, *args, **kwargs)

    def perform_update(self, serializer) -> None:
        # Only the agent-facing settings may change here; identity fields are fixed once
        # created (the admin may also change the agent and globs, through the same service).
        values = dict(serializer.validated_data)
        extra = set(values) - set(services.RIG_SETTINGS)
        if extra:
            field = sorted(extra)[0]
            raise ValidationError({field: f"'{field}' cannot change after the rig is created."})
        serializer.instance = services.rig_update(rig=serializer.instance, **values)


class RigActionView(APIView):
    """Base for POST rigs/{id}/<action>/: loads the rig and checks who may act on it."""

    permission_classes = [RigWrite]

    def get_rig(self, request: Request, pk: int) -> Rig:
        rig = Rig.objects.select_related("agent", "repository").filter(pk=pk).first()
        if rig is None:
            raise NotFound(f"rig {pk} does not exist.")
        self.check_object_permissions(request, rig)
        return rig


class RigHeartbeatView(RigActionView):
    @extend_schema(request=None, responses={200: RigSerializer})
    def post(self, request: Request, pk: int) -> Response:
        rig = services.rig_heartbeat(rig=self.get_rig(request, pk))
        return Response(RigSerializer(rig).data)


class RigSyncView(RigActionView):
    @extend_schema(request=None, responses={202: RigSerializer})
    def post(self, request: Request, pk: int) -> Response:
        rig = self.get_rig(request, pk)
        services.rig_sync_request(rig=rig)
        return Response(RigSerializer(rig).data, status=status.HTTP_202_ACCEPTED)


class RigRetryView(RigActionView):
    @extend_schema(request=None, responses={202: RigSerializer})
    def post(self, request: Request, pk: int) -> Response:
        rig = services.rig_retry(rig=self.get_rig(request, pk))
        return Response(RigSerializer(rig).data, status=status.HTTP_202_ACCEPTED)


class RigTeardownView(RigActionView):
    @extend_schema(request=TeardownSerializer, responses={202: RigSerializer})
    def post(self, request: Request, pk: int) -> Response:
        rig = self.get_rig(request, pk)
        body = TeardownSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # TeardownRefused (work would be lost) is a 409 `lost_work` (common.api).
        services.rig_teardown_request(
            rig=rig, force=body.validated_data["force"], requested_by=str(request.user)
        )
        return Response(RigSerializer(rig).data, status=status.HTTP_202_ACCEPTED)


# --- merge requests -----------------------------------------------------------------------------


class MergeRequestFilter(filters.FilterSet):
    rig = IdFilter(field_name="rig_id")
    repository = IdFilter(field_name="repository_id")
    state = filters.MultipleChoiceFilter(
        choices=MergeRequest.State.choices, help_text="repeat for several: ?state=queued&state=..."
    )
    target_branch = filters.CharFilter()
    source_branch = filters.CharFilter()

    class Meta:
        model = MergeRequest
        fields = ["rig", "repository", "state", "target_branch", "source_branch"]


class MergeRequestListView(generics.ListAPIView):
    """The merge queue's state, newest first. Ask to land a rig's branch with
    `POST rigs/{id}/merge-requests/`."""

    serializer_class = MergeRequestSerializer
    filterset_class = MergeRequestFilter
    queryset = MergeRequest.objects.order_by("-created_at", "-id")


class MergeRequestDetailView(generics.RetrieveAPIView):
    serializer_class = MergeRequestSerializer
    queryset = MergeRequest.objects.all()


# --- the CLI --------------------------------------------------------------------------------------

GT_PATH = Path(settings.BASE_DIR) / "bin" / "gt"


class CliDownloadView(APIView):
    """`GET cli/gt`: the `gt` command-line client (one Python file, standard library only).

    Public on purpose: it holds no secret, and an agent fetches it before it is configured
    (`curl -o gt $GT_URL/api/v1/cli/gt`). Throttled per address like every anonymous call."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(
        responses={(200, "text/x-python"): OpenApiResponse(OpenApiTypes.STR, description="bin/gt")},
        auth=[],
    )
    def get(self, request: Request) -> HttpResponse:
        try:
            body = GT_PATH.read_bytes()
        except OSError as exc:
            raise NotFound("the gt client is not installed on this server.") from exc
        response = HttpResponse(body, content_type="text/x-python; charset=utf-8")
        response["Content-Disposition"] = 'inline; filename="gt"'
        return response
