"""Thin DRF views for agent runs (launch, list, read, stop, follow the log, report usage) and
budgets (list, read, set, change, delete)."""

from django.core.exceptions import ValidationError
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import FieldErrors, body
from common.params import MAX_ID, parse_count
from rigs.api import IdFilter, RigActionView
from rigs.auth import calling_agent
from rigs.permissions import ReadOrOperator, is_operator, is_viewer
from runner import budgets, selectors, services
from runner.limits import budget_limits
from runner.models import AgentRun, Budget
from runner.serializers import (
    AgentRunSerializer,
    BudgetChangeSerializer,
    BudgetCreateSerializer,
    BudgetSerializer,
    RunLaunchSerializer,
    RunLogSerializer,
    RunUsageSerializer,
)
from runner.usage import Usage


class AgentRunFilter(filters.FilterSet):
    rig = IdFilter(field_name="rig_id")
    convoy = IdFilter(field_name="convoy_id")
    agent = filters.CharFilter(field_name="agent__name", help_text="the agent's name")
    state = filters.MultipleChoiceFilter(
        choices=AgentRun.State.choices, help_text="repeat for several: ?state=queued&state=..."
    )

    class Meta:
        model = AgentRun
        fields = ["rig", "convoy", "agent", "state"]


@extend_schema_view(get=extend_schema(summary="List agent runs"))
class AgentRunListView(generics.ListAPIView):
    """Agent runs, newest first. Agents see their own; people with a role see all.
    `?search=` looks in agents' names, rigs' slugs and reasons; `?ordering=` sorts."""

    serializer_class = AgentRunSerializer
    filterset_class = AgentRunFilter
    search_fields = ["agent__name", "rig__slug", "reason"]
    ordering_fields = ["created_at", "started_at", "finished_at", "state", "attempt", "cost_usd"]

    def get_queryset(self):
        runs = AgentRun.objects.select_related("agent", "rig", "leg").order_by("-id")
        agent = calling_agent(self.request)
        return runs.filter(agent=agent) if agent is not None else runs


class RunObjectMixin:
    def get_run(self, request: Request, pk: int, write: bool = False) -> AgentRun:
        run = AgentRun.objects.select_related("agent", "rig", "leg").filter(pk=pk).first()
        if run is None:
            raise NotFound(f"run {pk} does not exist.")
        agent = calling_agent(request)
        if agent is not None and run.agent_id != agent.id:
            raise PermissionDenied("Agents may only see and act on their own runs.")
        if agent is None and write and not is_operator(request.user):
            raise PermissionDenied("Only operators may do this.")
        if agent is None and not is_viewer(request.user):
            raise PermissionDenied("Your account has no role.")
        return run


class AgentRunDetailView(RunObjectMixin, APIView):
    """A run: its state, command, process, timing and usage (agents: their own runs)."""

    @extend_schema(summary="Show an agent run", responses={200: AgentRunSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(AgentRunSerializer(self.get_run(request, pk)).data)


class RigRunLaunchView(RigActionView):
    """`POST rigs/{id}/runs/`: launch the rig's agent (its runtime command) in the rig's
    worktree. Queued until the rig is ready and a slot is free; 409 when the rig already has an
    active run, its work is finished (`work_finished`: its leg landed) or its convoy's budget is
    spent."""

    @extend_schema(
        summary="Launch a rig's agent",
        tags=["runs"],
        request=RunLaunchSerializer,
        responses={202: AgentRunSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        rig = self.get_rig(request, pk)
        if not is_operator(request.user):
            raise PermissionDenied("Only operators may launch agents.")
        body = RunLaunchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.agent_run_request(
            rig=rig,
            requested_by=str(request.user),
            reason=body.validated_data["reason"] or f"launched by {request.user}",
            by_person=True,
        )
        return Response(AgentRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class AgentRunStopView(RunObjectMixin, APIView):
    """Stop a run: a queued one is cancelled; a live one's process group gets SIGTERM, then
    SIGKILL after the grace period. Operators, or the run's own agent."""

    @extend_schema(summary="Stop an agent run", request=None, responses={200: AgentRunSerializer})
    def post(self, request: Request, pk: int) -> Response:
        run = self.get_run(request, pk, write=True)
        run = services.agent_run_stop(run=run, requested_by=str(request.user))
        return Response(AgentRunSerializer(run).data)


class AgentRunLogView(RunObjectMixin, APIView):
    """The run's output. Without `offset`: the last 16 KiB. With `offset`: what follows it
    (poll with the returned `next_offset` to follow a live run)."""

    @extend_schema(
        summary="Read a run's output",
        parameters=[
            OpenApiParameter("offset", OpenApiTypes.INT, description="byte offset to read from"),
            OpenApiParameter("limit", OpenApiTypes.INT, description="bytes, at most 262144"),
        ],
        responses={200: RunLogSerializer},
    )
    def get(self, request: Request, pk: int) -> Response:
        run = self.get_run(request, pk)
        offset = _count_param(request, "offset", None)
        limit = _count_param(request, "limit", selectors.LOG_CHUNK_MAX)
        return Response(selectors.run_log_read(run, offset, limit))


class AgentRunUsageView(RunObjectMixin, APIView):
    """`POST runs/{id}/usage/`: add what the agent used since its last report (tokens, dollars)
    to the run and to its convoy's spend. The run's agent or an operator."""

    @extend_schema(
        summary="Report a run's usage",
        request=RunUsageSerializer,
        responses={200: AgentRunSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        run = self.get_run(request, pk, write=True)
        body = RunUsageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        usage = Usage(**body.validated_data)
        run = budgets.agent_run_usage_add(run=run, usage=usage, source="api")
        return Response(AgentRunSerializer(run).data)


class BudgetFilter(filters.FilterSet):
    scope = filters.ChoiceFilter(choices=Budget.Scope.choices)
    window = filters.ChoiceFilter(choices=Budget.Window.choices)
    agent = filters.CharFilter(field_name="agent__name", help_text="the agent's name")
    repository = IdFilter(field_name="repository_id")
    convoy = IdFilter(field_name="convoy_id")

    class Meta:
        model = Budget
        fields = ["scope", "window", "agent", "repository", "convoy"]


def _budget_body(budget: Budget) -> dict:
    return BudgetSerializer(budget, context={"limits": budget_limits([budget])}).data


@extend_schema_view(get=extend_schema(summary="List budgets with their spend"))
class BudgetListView(generics.ListCreateAPIView):
    """`GET budgets/`: limits in dollars and tokens on what runs spend, each with its spend over
    its window (people with a role: all; an agent: those over its own runs). `POST budgets/`:
    set one (operators): exactly one of `agent`, `repository`, `convoy`; one per target and
    window. A limit set under what is already spent acts at once (docs/runner.md#budgets)."""

    serializer_class = BudgetSerializer
    filterset_class = BudgetFilter
    permission_classes = [ReadOrOperator]

    def get_queryset(self):
        return selectors.budgets_visible(calling_agent(self.request))

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        limits = budget_limits(page)  # one aggregate query for the page's spend
        data = BudgetSerializer(page, many=True, context={"limits": limits}).data
        return self.get_paginated_response(data)

    @extend_schema(
        summary="Set a budget", request=BudgetCreateSerializer, responses={201: BudgetSerializer}
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        errors = FieldErrors()  # the fields' problems and the budget's rules, named together
        data = body(BudgetCreateSerializer, request, errors=errors)
        if errors.detail:
            targets = {"agent", "repository", "convoy"}
            try:
                budgets.budget_validate(Budget(**data))
            except ValidationError as exc:
                for name, messages in exc.message_dict.items():
                    if name == "scope" and targets & set(errors.detail):
                        continue  # (a bad target is named already)
                    errors.detail.setdefault(name, messages)
            errors.raise_any()
        budget = budgets.budget_save(budget=Budget(**data), by=str(request.user))
        return Response(_budget_body(budget), status=status.HTTP_201_CREATED)


_TARGET_FIXED = "a budget's target cannot change: delete it and set another."


class BudgetDetailView(APIView):
    """`GET budgets/{id}/` (as the list), `PATCH` its limits, window or cap, `DELETE` it
    (operators). Its target cannot change: delete it and set another."""

    permission_classes = [ReadOrOperator]

    def get_budget(self, request: Request, pk: int) -> Budget:
        budget = selectors.budgets_visible(calling_agent(request)).filter(pk=pk).first()
        if budget is None:
            raise NotFound(f"budget {pk} does not exist.")
        return budget

    @extend_schema(summary="Show a budget", responses={200: BudgetSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(_budget_body(self.get_budget(request, pk)))

    @extend_schema(
        summary="Change a budget's limits",
        request=BudgetChangeSerializer,
        responses={200: BudgetSerializer},
    )
    def patch(self, request: Request, pk: int) -> Response:
        budget = self.get_budget(request, pk)
        errors = FieldErrors()  # every bad field named at once
        data = body(BudgetChangeSerializer, request, errors=errors, partial=True)
        for name in ("scope", "agent", "repository", "convoy"):
            if name in request.data:  # (said instead of "unknown field")
                errors.detail[name] = [
                    "a budget's target cannot change: delete it and set another."
                ]
        errors.raise_any()
        for name, value in data.items():
            setattr(budget, name, value)
        budget = budgets.budget_save(budget=budget, by=str(request.user))
        return Response(_budget_body(budget))

    @extend_schema(summary="Delete a budget", request=None, responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        budgets.budget_delete(budget=self.get_budget(request, pk), by=str(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _count_param(request: Request, name: str, default: int | None) -> int | None:
    """A non-negative integer query parameter (the common parser), 400 past the 64-bit range."""
    raw = request.query_params.get(name) or ""
    if not raw:
        return default
    value = parse_count(raw, name, maximum=MAX_ID + 1)
    if value > MAX_ID:
        raise ValidationError({name: f"'{raw[:30]}' is out of range."})
    return value
