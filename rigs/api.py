"""Thin DRF views for repositories and rigs: they validate input and call services."""

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gastown_site.api_errors import error_response
from rigs import services
from rigs.auth import calling_agent
from rigs.models import Agent, Repository, Rig
from rigs.permissions import ReadOrOperator, RigWrite, is_operator
from rigs.serializers import (
    RepositorySerializer,
    RigCreateSerializer,
    RigSerializer,
    TeardownSerializer,
)


class RepositoryListView(generics.ListCreateAPIView):
    queryset = Repository.objects.order_by("name")
    serializer_class = RepositorySerializer
    permission_classes = [ReadOrOperator]
    filterset_fields = ["name", "target_branch"]

    def perform_create(self, serializer) -> None:
        serializer.instance = services.repository_register(**serializer.validated_data)


class RepositoryDetailView(generics.RetrieveAPIView):
    queryset = Repository.objects.all()
    serializer_class = RepositorySerializer


class RigListView(generics.ListCreateAPIView):
    serializer_class = RigSerializer
    filterset_fields = ["repository", "state", "slug"]

    def get_queryset(self):
        qs = Rig.objects.select_related("agent", "repository").order_by("id")
        agent = self.request.query_params.get("agent")
        if agent:
            qs = qs.filter(agent__name=agent)
        return qs

    @extend_schema(request=RigCreateSerializer, responses={201: RigSerializer})
    def post(self, request: Request, *args, **kwargs) -> Response:
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

    def perform_update(self, serializer) -> None:
        # Only the agent-facing settings may change; identity fields are fixed once created.
        allowed = {"notify_level", "role"}
        extra = set(serializer.validated_data) - allowed
        if extra:
            from rest_framework.exceptions import ValidationError

            field = sorted(extra)[0]
            raise ValidationError({field: f"'{field}' cannot change after the rig is created."})
        serializer.save()


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
        try:
            services.rig_teardown_request(
                rig=rig, force=body.validated_data["force"], requested_by=str(request.user)
            )
        except services.TeardownRefused as exc:
            return error_response("lost_work", str(exc), status.HTTP_409_CONFLICT, "force")
        return Response(RigSerializer(rig).data, status=status.HTTP_202_ACCEPTED)
