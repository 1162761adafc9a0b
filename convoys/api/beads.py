"""Beads: list (ready, by rig, leg, convoy, repository, pool), create, detail and PATCH, claim,
close, dependencies."""

from datetime import UTC, datetime
from functools import partial

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import FieldErrors, Pagination
from common.filters import list_param, query_check
from common.params import optional_id, parse_flag
from convoys import services
from convoys.api.base import bead_by_ref, body, check_bead_write, get_object
from convoys.models import Bead, BeadDependency, Convoy, Leg
from convoys.selectors import bead_explain, beads_list, beads_ready
from convoys.serializers import (
    BeadClaimSerializer,
    BeadCloseResultSerializer,
    BeadCloseSerializer,
    BeadCreateSerializer,
    BeadDetailSerializer,
    BeadSerializer,
    BeadUpdateSerializer,
    DependencyCreateSerializer,
    DependencyRemoveResultSerializer,
    DependencySerializer,
)
from rigs.auth import calling_agent
from rigs.models import Agent, Repository, Rig
from rigs.permissions import is_operator

_ID_FILTERS = ["rig", "leg", "convoy", "repository"]


class BeadPagination(Pagination):
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


def _iso(value: datetime | None) -> str | None:
    """A date-time as DRF writes it (UTC, `Z`)."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def bead_row(bead: Bead) -> dict:
    """BeadSerializer's output, written directly: `ready` lists are what agents poll every
    second, and DRF's per-field machinery was a third of that request (tests check both agree).
    """
    return {
        "id": bead.id,
        "short_id": bead.short_id,
        "rig": bead.rig_id,
        "leg": bead.leg_id,
        "convoy": bead.convoy_id,
        "repository": bead.repository_id,
        "title": bead.title,
        "description": bead.description,
        "acceptance_criteria": bead.acceptance_criteria,
        "status": bead.status,
        "priority": bead.priority,
        "type": bead.type,
        "assignee": bead.assignee.name if bead.assignee_id else None,
        "labels": bead.labels,
        "defer_until": _iso(bead.defer_until),
        "close_reason": bead.close_reason,
        "claimed_at": _iso(bead.claimed_at),
        "lease_expires_at": _iso(bead.lease_expires_at),
        "claimed_by_run": bead.claimed_by_run_id,
        "closed_at": _iso(bead.closed_at),
        "created_at": _iso(bead.created_at),
        "updated_at": _iso(bead.updated_at),
    }


_HOMES = {
    "rig": Rig.objects.select_related("agent"),
    "leg": Leg.objects.select_related("rig", "convoy"),
    "convoy": Convoy.objects.all(),
    "repository": Repository.objects.all(),
}


def _create_args(request: Request) -> dict:
    """The body of `POST beads/` as `bead_create`'s arguments: ids resolved (one 400 naming
    every unknown one), and checked: agents create beads only in their own rigs, and add a
    `blocks` edge only to beads they may change (the edge belongs to the blocked bead)."""
    errors = FieldErrors()
    data = body(BeadCreateSerializer, request, errors=errors)
    for name, qs in _HOMES.items():
        value = data.get(name)
        data[name] = None
        if value is not None:
            data[name] = errors.check(partial(get_object, qs, name, value, name))
    refs = dict.fromkeys(data.get("blocks", []))
    data["blocks"] = [errors.check(partial(bead_by_ref, ref, "blocks")) for ref in refs]
    found_in = data.get("discovered_from")
    data["discovered_from"] = (
        errors.check(partial(bead_by_ref, found_in, "discovered_from")) if found_in else None
    )
    errors.raise_any()
    if not is_operator(request.user):
        rig = data["rig"] or (data["leg"].rig if data["leg"] else None)
        if calling_agent(request) is None:
            raise PermissionDenied("Only operators and agents create beads.")
        if rig is None or rig.agent_id != calling_agent(request).id:
            raise PermissionDenied(
                "Agents create beads only in their own rigs: give `rig` (one of yours)."
            )
        for other in data["blocks"]:
            check_bead_write(request, other)
    return data


def _check_status(value: str | None) -> str | None:
    if value and value not in Bead.Status.values:
        raise ValidationError(
            {"status": f"'{value}' is not one of {', '.join(Bead.Status.values)}."}
        )
    return value or None


SCOPE_PARAMS = [
    list_param(name, f"only this {name}'s beads", "integer", minimum=1) for name in _ID_FILTERS
]


@extend_schema_view(
    get=extend_schema(
        summary="List beads",
        description="A rig's (or a leg's, a convoy's, a repository's, a pool's) beads, most "
        "urgent first; `?ready=true`: only those that can start now. `?search=` looks in "
        "titles and short ids; `?ordering=` sorts.",
    )
)
class BeadListView(generics.ListAPIView):
    """`GET beads/?rig=&ready=true`: a rig's (or a convoy's, a repository's, a pool's) beads.
    `POST beads/`: a new bead in one of your rigs (operators: anywhere, pools included)."""

    serializer_class = BeadSerializer
    pagination_class = BeadPagination
    # filtering by scope is explicit below, through the selectors; then search and ordering
    list_params = [
        *SCOPE_PARAMS,
        list_param("ready", "only ready beads, most urgent first", "boolean"),
        list_param("pool", "only beads waiting in a pool (no rig)", "boolean"),
        list_param("status", "only this status (not with ready)", enum=Bead.Status.values),
    ]
    search_fields = ["title", "=short_id"]
    ordering_fields = ["priority", "created_at", "updated_at", "closed_at", "title", "status"]

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response([bead_row(bead) for bead in page])

    def get_queryset(self):
        params = self.request.query_params
        errors = FieldErrors()  # every bad parameter named at once
        scope = {name: errors.check(partial(optional_id, params, name)) for name in _ID_FILTERS}
        pool = errors.check(partial(parse_flag, params, "pool"))
        ready = errors.check(partial(parse_flag, params, "ready"))
        status_ = errors.check(partial(_check_status, params.get("status")))
        errors.check(partial(query_check, self.request, Bead.objects.none(), self))
        errors.raise_any()
        if ready:
            return beads_ready(**scope, pool=pool)
        return beads_list(**scope, pool=pool, status=status_)

    @extend_schema(
        summary="Create a bead",
        description="A new bead in one of your rigs (operators: anywhere, pools included), "
        "with its dependencies (`blocks`, `discovered_from`). Every bad field is named at once.",
        request=BeadCreateSerializer,
        responses={201: BeadSerializer},
    )
    def post(self, request: Request) -> Response:
        bead = services.bead_create(**_create_args(request))
        return Response(BeadSerializer(bead).data, status=status.HTTP_201_CREATED)


def _links(edges, other: str) -> list[dict]:
    return [
        {
            "id": getattr(e, other).id,
            "short_id": getattr(e, other).short_id,
            "title": getattr(e, other).title,
            "status": getattr(e, other).status,
            "rig": getattr(e, other).rig_id,
            "type": e.type,
        }
        for e in edges
    ]


BEAD_PATH = OpenApiParameter(
    "ref", OpenApiTypes.STR, OpenApiParameter.PATH, description="a bead's id or short id (gt-…)"
)


def _assignee(request: Request, name: str | None) -> Agent | None:
    """PATCH's `assignee`: an agent by name (400 when unknown), None to clear it. Agents may
    name only themselves (or nobody); operators anyone."""
    agent = Agent.objects.filter(name=name).first() if name else None
    if name and agent is None:
        raise ValidationError({"assignee": f"agent '{name}' does not exist."})
    me = calling_agent(request)
    if me is not None and agent is not None and agent != me:
        raise PermissionDenied(
            "Agents assign beads to themselves or to nobody; an operator hands work to another "
            "agent (or tell it: `gt send`)."
        )
    return agent


@extend_schema(parameters=[BEAD_PATH])
class BeadDetailView(APIView):
    """A bead with its dependencies, dependents and why it is not ready. PATCH edits it through
    the bead's services: a status change is a state-machine transition (closing dispatches what
    it unblocks; `in_progress` is reached by claiming)."""

    @extend_schema(summary="Show a bead", responses={200: BeadDetailSerializer})
    def get(self, request: Request, ref: str) -> Response:
        return Response(self._detail(bead_by_ref(ref)))

    @staticmethod
    def _detail(bead: Bead) -> dict:
        """BeadDetailSerializer's shape (its extra fields are not model attributes: the model's
        reverse relations are already called `dependencies` and `dependents`)."""
        reasons = bead_explain(bead)
        edges = BeadDependency.objects.order_by("id")
        return {
            **BeadSerializer(bead).data,
            "ready": not reasons,
            "not_ready_reasons": reasons,
            "dependencies": _links(
                edges.filter(bead=bead).select_related("depends_on"), "depends_on"
            ),
            "dependents": _links(edges.filter(depends_on=bead).select_related("bead"), "bead"),
        }

    @extend_schema(
        summary="Edit a bead",
        description="Change a bead's fields through its services: a status change is a "
        "state-machine transition (closing dispatches what it unblocks; `in_progress` is "
        "reached by claiming); `assignee` is an agent's name or null.",
        request=BeadUpdateSerializer,
        responses={200: BeadDetailSerializer},
    )
    def patch(self, request: Request, ref: str) -> Response:
        bead = bead_by_ref(ref)
        check_bead_write(request, bead)
        data = body(BeadUpdateSerializer, request, partial=True)
        to, reason = data.pop("status", None), data.pop("close_reason", "")
        if "assignee" in data:
            data["assignee"] = _assignee(request, data["assignee"])
            if bead.status == Bead.Status.IN_PROGRESS and data["assignee"] != bead.assignee:
                raise ValidationError(
                    {"assignee": f"{bead.short_id} is in progress (claimed): release it first "
                     f"(POST beads/{bead.short_id}/release/, `gt release`), then claim it for "
                     "the agent (operators: POST claim/ with `agent`)."}
                )  # fmt: skip
        agent = calling_agent(request)
        services.bead_edit(
            bead=bead,
            values=data,
            status=to,
            close_reason=reason,
            by=agent or request.user.get_username(),
        )
        return Response(self._detail(bead_by_ref(bead.pk)))


@extend_schema(parameters=[BEAD_PATH])
class BeadClaimView(APIView):
    """Claim a ready bead (open → in_progress, you become its assignee). Atomic: of several
    claimers one wins; the others get 409 naming the holder. A bead in another agent's rig is
    refused with 403; a pool bead moves into your rig on its repository. The claim is a lease
    (`lease_expires_at`, `GASTOWN_CLAIM_LEASE_SECONDS`): your heartbeats (and your run's
    output) renew it; when it lapses, or your run ends, the bead is open again, and a claim of
    a bead whose lease lapsed wins. Claiming a bead you hold renews its lease."""

    @extend_schema(
        summary="Claim a bead", request=BeadClaimSerializer, responses={200: BeadSerializer}
    )
    def post(self, request: Request, ref: str) -> Response:
        bead = bead_by_ref(ref)
        name = body(BeadClaimSerializer, request).get("agent") or ""
        agent = calling_agent(request)
        if agent is not None:
            if name and name != agent.name:
                raise PermissionDenied("Agents claim beads for themselves only.")
            # a pool bead another agent's claim took into its rig is still a pool bead: the
            # claim wins once that claim's lease lapsed (409 naming the holder until then)
            if bead.rig_id and bead.rig.agent_id != agent.id and not bead.claimed_from_pool:
                raise PermissionDenied(
                    f"{bead.short_id} is in rig {bead.rig.slug}, which is not yours; claim beads "
                    "in your own rigs or in a pool."
                )
        elif is_operator(request.user):
            if not name:
                raise ValidationError({"agent": "operators claim on behalf of an agent: name it."})
            agent = Agent.objects.filter(name=name).first()
            if agent is None:
                raise ValidationError({"agent": f"agent '{name}' does not exist."})
        else:
            raise PermissionDenied("Only agents (and operators for them) claim beads.")
        bead = services.bead_claim(bead=bead, agent=agent)
        return Response(BeadSerializer(bead).data)


@extend_schema(parameters=[BEAD_PATH])
class BeadCloseView(APIView):
    """Close a bead; the answer lists the beads this made ready (their rigs are told)."""

    @extend_schema(
        summary="Close a bead",
        request=BeadCloseSerializer,
        responses={200: BeadCloseResultSerializer},
    )
    def post(self, request: Request, ref: str) -> Response:
        bead = bead_by_ref(ref)
        check_bead_write(request, bead)
        reason = body(BeadCloseSerializer, request)["reason"]
        bead, unblocked = services.bead_close(bead=bead, reason=reason)
        return Response(BeadCloseResultSerializer({"bead": bead, "unblocked": unblocked}).data)


@extend_schema(parameters=[BEAD_PATH])
class BeadDependencyView(APIView):
    """This bead depends on another (`blocks`: it cannot start until that one closes). A
    `blocks` or `parent-child` edge that would close a cycle answers 409 naming the cycle."""

    @extend_schema(
        summary="Add a dependency",
        request=DependencyCreateSerializer,
        responses={201: DependencySerializer},
    )
    def post(self, request: Request, ref: str) -> Response:
        bead = bead_by_ref(ref)
        check_bead_write(request, bead)
        data = body(DependencyCreateSerializer, request)
        depends_on = bead_by_ref(data["depends_on"], "depends_on")
        dependency = services.bead_dependency_add(
            bead=bead, depends_on=depends_on, type=data["type"]
        )
        return Response(DependencySerializer(dependency).data, status=status.HTTP_201_CREATED)


@extend_schema(
    parameters=[
        BEAD_PATH,
        OpenApiParameter(
            "depends_on",
            OpenApiTypes.STR,
            OpenApiParameter.PATH,
            description="the bead it depends on: id or short id (gt-…)",
        ),
    ]
)
class BeadDependencyDetailView(APIView):
    """Drop the edge "this bead depends on that one" (any type). Answers the beads this made
    ready (their rigs are told, as when a blocker closes); 404 when there is no such edge."""

    @extend_schema(
        summary="Remove a dependency",
        request=None,
        responses={200: DependencyRemoveResultSerializer},
    )
    def delete(self, request: Request, ref: str, depends_on: str) -> Response:
        bead = bead_by_ref(ref)
        check_bead_write(request, bead)
        other = bead_by_ref(depends_on)
        unblocked = services.bead_dependency_remove(bead=bead, depends_on=other)
        result = {"bead": bead, "depends_on": other, "unblocked": unblocked}
        return Response(DependencyRemoveResultSerializer(result).data)
