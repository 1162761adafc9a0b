"""Thin DRF views for repositories, rigs and merge requests: they validate input and call
services. (Views that need convoys, like `me/` and a rig's merge request, live in convoys/api.py:
rigs knows nothing about convoys.)"""

import os
from functools import partial
from pathlib import Path

from django import forms
from django.conf import settings
from django.db.models.functions import Length
from django.http import HttpResponse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, permissions, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import FieldErrors, body, error_response
from common.filters import list_param
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


@extend_schema_view(
    get=extend_schema(
        summary="List repositories",
        description="The repositories agents work on, by name (`?search=`, `?ordering=`).",
    )
)
class RepositoryListView(generics.ListCreateAPIView):
    """Repositories: list them (everyone), register one (operators; setting its gate or setup
    command is for admins)."""

    queryset = Repository.objects.order_by("name")
    serializer_class = RepositorySerializer
    permission_classes = [ReadOrOperator]
    filterset_fields = ["name", "target_branch"]
    search_fields = ["name"]
    ordering_fields = ["name", "created_at"]

    @extend_schema(
        summary="Register a repository",
        description="Register a git repository by its path on the server (operators; the gate "
        "and setup commands are run by the server: admins only).",
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        # Before validation: setting a command is refused whatever else the body holds.
        command_fields_check(request.user, request.data)
        errors = FieldErrors()  # bad fields and a bad location: named together
        data = body(RepositorySerializer, request, errors=errors)
        if "path" in data:
            where = {
                "path": data["path"],
                "target_branch": data.get("target_branch", "main"),
                "init_if_missing": data.get("init_if_missing", False),
            }
            errors.check(partial(services.repository_location_validate, **where))
        errors.raise_any()
        repository = services.repository_register(**data)
        return Response(RepositorySerializer(repository).data, status=status.HTTP_201_CREATED)


@extend_schema_view(get=extend_schema(summary="Show a repository"))
class RepositoryDetailView(generics.RetrieveAPIView):
    """A repository: its path, target branch, commands and merge settings."""

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


@extend_schema_view(
    get=extend_schema(
        summary="List rigs",
        description="Rigs, oldest first (`?search=`, `?ordering=`); `?worktree=` finds the rig "
        "whose worktree holds a path.",
    )
)
class RigListView(generics.ListCreateAPIView):
    """Rigs: list them, or request one (operators; agents for themselves)."""

    serializer_class = RigSerializer
    filterset_class = RigFilter
    queryset = Rig.objects.select_related("agent", "repository").order_by("id")
    list_params = [
        list_param(
            "worktree",
            "an absolute path: the rig whose worktree holds it (the deepest first); agents: only "
            "among their own rigs",
        )
    ]
    search_fields = ["slug", "branch", "agent__name"]
    ordering_fields = {
        "slug": "slug",
        "state": "state",
        "repository": "repository__name",
        "agent": "agent__name",
        "created_at": "created_at",
        "last_heartbeat_at": "last_heartbeat_at",
    }

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

    @extend_schema(
        summary="Request a rig",
        description="A new rig (worktree and branch) for an agent, provisioned by a worker: "
        "`201` in state `requested`. Agents request rigs for themselves; operators name any "
        "agent (or none).",
        request=RigCreateSerializer,
        responses={201: RigSerializer},
    )
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


@extend_schema_view(
    get=extend_schema(summary="Show a rig"),
    patch=extend_schema(
        summary="Change a rig's settings",
        description="Only `notify_level` and `role` change after a rig is created (its owner "
        "or operators); any other field is a 400 naming it.",
    ),
)
class RigDetailView(generics.RetrieveUpdateAPIView):
    """A rig: its state, branch, worktree, head and counts against its target."""

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
        extra = sorted(set(values) - set(services.RIG_SETTINGS))
        if extra:  # every one of them named
            raise ValidationError(
                {name: f"'{name}' cannot change after the rig is created." for name in extra}
            )
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
    """The agent is alive: records the heartbeat and renews the leases of its claims."""

    @extend_schema(summary="Send a heartbeat", request=None, responses={200: RigSerializer})
    def post(self, request: Request, pk: int) -> Response:
        rig = services.rig_heartbeat(rig=self.get_rig(request, pk))
        return Response(RigSerializer(rig).data)


class RigSyncView(RigActionView):
    """Ask a worker to read the rig's branch again (head, ahead/behind, uncommitted changes)
    and store it: `202`. A branch that moved is announced as a `rig.branch` event."""

    @extend_schema(summary="Sync a rig", request=None, responses={202: RigSerializer})
    def post(self, request: Request, pk: int) -> Response:
        rig = self.get_rig(request, pk)
        services.rig_sync_request(rig=rig)
        return Response(RigSerializer(rig).data, status=status.HTTP_202_ACCEPTED)


class RigRetryView(RigActionView):
    """Provision a failed rig again: `202`, back to `requested`."""

    @extend_schema(
        summary="Retry a failed rig's provisioning", request=None, responses={202: RigSerializer}
    )
    def post(self, request: Request, pk: int) -> Response:
        rig = services.rig_retry(rig=self.get_rig(request, pk))
        return Response(RigSerializer(rig).data, status=status.HTTP_202_ACCEPTED)


class RigTeardownView(RigActionView):
    """Remove the rig's worktree (a worker does it): `202`. Refused with 409 `lost_work` when
    its branch has commits not on its target or its worktree is dirty, unless `force` (the
    branch tip is archived first)."""

    @extend_schema(
        summary="Tear a rig down", request=TeardownSerializer, responses={202: RigSerializer}
    )
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


@extend_schema_view(get=extend_schema(summary="List merge requests"))
class MergeRequestListView(generics.ListAPIView):
    """The merge queue's state, newest first (`?search=` a branch or a rig's slug,
    `?ordering=`). Ask to land a rig's branch with `POST rigs/{id}/merge-requests/`."""

    serializer_class = MergeRequestSerializer
    filterset_class = MergeRequestFilter
    queryset = MergeRequest.objects.prefetch_related("approvals").order_by("-created_at", "-id")
    search_fields = ["source_branch", "target_branch", "rig__slug"]
    ordering_fields = ["created_at", "priority", "state", "started_at", "finished_at"]


@extend_schema_view(get=extend_schema(summary="Show a merge request"))
class MergeRequestDetailView(generics.RetrieveAPIView):
    """A merge request: its state, commits, conflicts and the tail of its gate's log."""

    serializer_class = MergeRequestSerializer
    queryset = MergeRequest.objects.prefetch_related("approvals")


# --- the CLI --------------------------------------------------------------------------------------

GT_PATH = Path(settings.BASE_DIR) / "bin" / "gt"


class CliDownloadView(APIView):
    """`GET cli/gt`: the `gt` command-line client (one Python file, standard library only).

    Public on purpose: it holds no secret, and an agent fetches it before it is configured
    (`curl -o gt $GT_URL/api/v1/cli/gt`). Throttled per address like every anonymous call."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(
        summary="Download the gt client",
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
