"""Thin DRF views for the agents' side of Gas Town: who am I (and the prime briefing), convoys,
beads, a rig's merge request, notifications and the event log.

Views check who may act on which object, call one service (or a selector) and shape the
answer; the services hold the rules and raise errors that common.api maps to
statuses (409 for conflicts, 400 naming the field for bad input).
"""

import hashlib
import re
from collections import defaultdict
from datetime import UTC, datetime

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Count, F, Max, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, pagination, renderers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import error_response
from convoys import services
from convoys.models import Bead, BeadDependency, Convoy, Leg, LegDependency, Notification
from convoys.selectors import (
    bead_explain,
    beads_list,
    beads_ready,
    convoy_rollup,
    convoy_waves,
    leg_merge_target,
)
from convoys.serializers import (
    AckAllResultSerializer,
    AckAllSerializer,
    BeadClaimSerializer,
    BeadCloseResultSerializer,
    BeadCloseSerializer,
    BeadCreateSerializer,
    BeadDetailSerializer,
    BeadSerializer,
    BeadUpdateSerializer,
    ConvoyCancelSerializer,
    ConvoyCreateSerializer,
    ConvoyDetailSerializer,
    ConvoySerializer,
    DependencyCreateSerializer,
    DependencyRemoveResultSerializer,
    DependencySerializer,
    MeSerializer,
    NotificationSerializer,
)
from rigs.api import IdFilter
from rigs.auth import calling_agent
from rigs.models import Agent, Repository, Rig
from rigs.permissions import ReadOrOperator, RigWrite, is_operator, owns_rig, person_roles
from rigs.serializers import AgentSerializer, MergeRequestCreateSerializer, MergeRequestSerializer

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}
MAX_ID = 2**63 - 1
SHORT_ID_RE = re.compile(r"^gt-[0-9a-z]{1,13}$")


def _flag(params, name: str) -> bool:
    value = params.get(name, "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValidationError({name: f"'{value}' is not a boolean; use true or false."})
    return value in _TRUE


def _id(params, name: str) -> int | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    # isascii: str.isdigit() also accepts '²' and other digits int() refuses
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_ID:
        raise ValidationError({name: f"'{value}' is not an id (a positive integer)."})
    return int(value)


def _body(serializer_class, request: Request, **kwargs) -> dict:
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _get(queryset: QuerySet, what: str, pk: int, field: str | None = None):
    """The object, or 404 (`field` set: 400 naming the field, for an id given in a body)."""
    obj = queryset.filter(pk=pk).first() if 1 <= pk <= MAX_ID else None
    if obj is None:
        if field:
            raise ValidationError({field: f"{what} {pk} does not exist."})
        raise NotFound(f"{what} {pk} does not exist.")
    return obj


def _bead(ref: int | str, field: str | None = None, qs: QuerySet | None = None) -> Bead:
    """A bead by id or short id (`gt-a1b2`)."""
    qs = qs if qs is not None else Bead.objects.select_related("rig", "assignee")
    text = str(ref).strip()
    if text.isascii() and text.isdigit() and len(text) < 19:
        bead = qs.filter(pk=int(text)).first()
    elif SHORT_ID_RE.match(text.lower()):
        bead = qs.filter(short_id=text.lower()).first()
    else:
        bead = None  # not an id: no query (and no NUL bytes sent to the database)
    if bead is None:
        if field:
            raise ValidationError({field: f"bead {text} does not exist."})
        raise NotFound(f"bead {text} does not exist.")
    return bead


def _can_write_bead(request: Request, bead: Bead) -> bool:
    """Operators; the agent whose rig holds the bead; for a pool bead, the agent holding it."""
    if is_operator(request.user):
        return True
    agent = calling_agent(request)
    if agent is None:
        return False
    if bead.rig_id is not None:
        return bead.rig.agent_id == agent.id
    return bead.assignee_id == agent.id


def _check_bead_write(request: Request, bead: Bead) -> None:
    if _can_write_bead(request, bead):
        return
    if calling_agent(request) is None:
        raise PermissionDenied("Only operators and the bead's agent may change it.")
    where = f"rig {bead.rig.slug}" if bead.rig_id else "a pool"
    raise PermissionDenied(
        f"{bead.short_id} is in {where}, not one of your rigs; agents change only their own "
        "rigs' beads."
    )


# --- me and prime ---------------------------------------------------------------------------------


def _current_legs(rigs: list[Rig]) -> dict[int, Leg]:
    """`convoys.selectors.rig_current_leg` for several rigs in one query (same rule: an open leg
    of a convoy that has not ended; a launched convoy's before a draft's, then the newest)."""
    legs = (
        Leg.objects.filter(rig__in=rigs, state__in=Leg.OPEN_STATES)
        .exclude(convoy__state__in=[Convoy.State.LANDED, Convoy.State.CANCELLED])
        .select_related("convoy")
        .order_by(F("convoy__launched_at").desc(nulls_last=True), "-id")
    )
    current: dict[int, Leg] = {}
    for leg in legs:
        current.setdefault(leg.rig_id, leg)
    return current


def _merge_target(rig: Rig, leg: Leg | None) -> str:
    """`convoys.selectors.merge_target_for_rig` with the leg already loaded."""
    if leg is not None and leg.convoy.state in Convoy.ACTIVE_STATES:
        return leg_merge_target(leg)
    return rig.repository.target_branch


def _assignment(rig: Rig, leg: Leg | None) -> dict | None:
    if leg is None:
        return None
    return {
        "rig": rig.id,
        "leg": leg.id,
        "leg_key": leg.key,
        "leg_title": leg.title,
        "leg_state": leg.state,
        "convoy": leg.convoy_id,
        "convoy_title": leg.convoy.title,
        "convoy_state": leg.convoy.state,
        "merge_target": _merge_target(rig, leg),
    }


def agent_overview(agent: Agent) -> dict:
    """The agent, its rigs (not archived) with their current legs and unacked counts: 3 queries."""
    rigs = list(
        Rig.objects.filter(agent=agent)
        .exclude(state=Rig.State.ARCHIVED)
        .select_related("repository")
        .order_by("id")
    )
    legs = _current_legs(rigs) if rigs else {}
    unacked = dict(
        Notification.objects.filter(rig__in=rigs, acked_at__isnull=True)
        .values_list("rig")
        .annotate(n=Count("id"))
        .values_list("rig", "n")
    )
    rows = [
        {
            "id": rig.id,
            "slug": rig.slug,
            "repository": rig.repository_id,
            "repository_name": rig.repository.name,
            "state": rig.state,
            "branch": rig.branch,
            "worktree_path": rig.worktree_path,
            "merge_target": _merge_target(rig, legs.get(rig.id)),
            "ahead": rig.ahead,
            "behind": rig.behind,
            "dirty": rig.dirty,
            "assignment": _assignment(rig, legs.get(rig.id)),
            "unacked_notifications": unacked.get(rig.id, 0),
            "_rig": rig,
        }
        for rig in rigs
    ]
    return {
        "kind": "agent",
        "agent": AgentSerializer(agent).data,
        "user": None,
        "rigs": rows,
        "assignment": next((r["assignment"] for r in rows if r["assignment"]), None),
        "unread_notifications": sum(unacked.values()),
    }


class MeView(APIView):
    """Who am I. An agent gets its rigs, current assignment and unread notifications count; a
    person (session or personal token) gets 200 too, with `kind: person`, the username and
    roles, and no rigs (people do not own rigs)."""

    @extend_schema(responses={200: MeSerializer})
    def get(self, request: Request) -> Response:
        agent = calling_agent(request)
        if agent is not None:
            data = agent_overview(agent)
            for row in data["rigs"]:
                row.pop("_rig")
        else:
            user = request.user
            data = {
                "kind": "person",
                "agent": None,
                "user": {"username": user.get_username(), "roles": person_roles(user)},
                "rigs": [],
                "assignment": None,
                "unread_notifications": 0,
            }
        return Response(MeSerializer(data).data)


class PlainTextRenderer(renderers.BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return str(data).encode(self.charset)


PRIME_BEADS = 10
PRIME_NOTES = 6


def _cut(text: str, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _pick_rig(rows: list[dict], wanted: str | None) -> dict | None:
    if wanted:
        for row in rows:
            if str(row["id"]) == wanted or row["slug"] == wanted:
                return row
        raise NotFound(f"you have no rig '{wanted}' (by id or slug).")
    live = [r for r in rows if r["state"] in Rig.LIVE_STATES] or rows
    return next((r for r in live if r["assignment"]), live[0] if live else None)


def prime_text(agent: Agent, wanted_rig: str | None = None) -> str:
    """The briefing: who, which rig, which leg, what is ready, what is unread, what to type.
    Bounded: at most 10 ready beads and 6 notifications, texts cut (well under ~1,500 tokens)."""
    overview = agent_overview(agent)
    row = _pick_rig(overview["rigs"], wanted_rig)
    now = timezone.now().strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Gas Town briefing for agent {agent.name} ({now})", ""]
    if row is None:
        lines += [
            f"You are agent `{agent.name}`. You have no rig yet, so there is nothing to work on.",
            "An operator assigns you a leg of a convoy (a rig is provisioned for it), or you",
            'request a rig: `POST /api/v1/rigs/ {"slug": ..., "repository": ...}`.',
            "",
            "Commands: `gt whoami` (your rigs), `gt convoy list`, `gt prime` again later.",
        ]
        return "\n".join(lines) + "\n"
    rig: Rig = row["_rig"]
    target = row["merge_target"]
    lines += [
        f"You are agent `{agent.name}`, working in rig `{rig.slug}` (id {rig.id}) on repository "
        f"`{rig.repository.name}`.",
        f"- state: {rig.state}; branch `{rig.branch}`; worktree `{rig.worktree_path}`",
        f"- commits: {rig.ahead} ahead, {rig.behind} behind `{rig.repository.target_branch}`"
        + ("; uncommitted changes" if rig.dirty else "")
        + f" (head {rig.head_commit[:10] or '-'}, as of the last sync)",
        f"- merge target: `{target}` (`gt done` asks to land your branch there)",
    ]
    if rig.scope:
        lines.append(f"- your scope: {', '.join(rig.scope[:10])}")
    others = [r for r in overview["rigs"] if r["id"] != rig.id]
    if others:
        listed = ", ".join(f"{r['slug']} (id {r['id']}, {r['state']})" for r in others[:5])
        lines.append(f"- your other rigs: {listed}; choose with GT_RIG=<id or slug>")
    lines.append("")

    assignment = row["assignment"]
    if assignment:
        convoy = Convoy.objects.get(pk=assignment["convoy"])
        rollup = convoy_rollup(convoy)
        leg_row = next(leg for leg in rollup["legs"] if leg["id"] == assignment["leg"])
        progress = rollup["progress"]
        lines += [
            "## Your leg",
            f"Leg `{leg_row['key']}`: {_cut(leg_row['title'], 120)} ({leg_row['state']}), "
            f'wave {leg_row["wave"]} of convoy #{convoy.id} "{_cut(convoy.title, 80)}" '
            f"({convoy.state}, {progress['landed']}/{progress['total']} legs landed).",
        ]
        if leg_row["depends_on"]:
            states = {leg["key"]: leg["state"] for leg in rollup["legs"]}
            deps = ", ".join(f"{k} ({states.get(k, '?')})" for k in leg_row["depends_on"])
            lines.append(f"Depends on: {deps}.")
        blocked = next((b for b in rollup["blocked"] if b["id"] == leg_row["id"]), None)
        if blocked:
            lines.append(f"Blocked: {'; '.join(blocked['reasons'])}.")
        description = Leg.objects.filter(pk=leg_row["id"]).values_list("description", flat=True)
        if description and description[0]:
            lines.append(f"Description: {_cut(description[0], 400)}")
        lines.append("")

    mine = list(
        Bead.objects.filter(rig=rig, status=Bead.Status.IN_PROGRESS).order_by(
            "priority", "claimed_at"
        )[:5]
    )
    if mine:
        lines.append("## In progress")
        lines += [f"- {b.short_id} [P{b.priority} {b.type}] {_cut(b.title, 100)}" for b in mine]
        lines.append("")
    ready_ids = list(beads_ready(rig=rig).values_list("pk", flat=True)[: PRIME_BEADS + 1])
    ready = list(Bead.objects.filter(pk__in=ready_ids[:PRIME_BEADS]).order_by("priority", "id"))
    ready.sort(key=lambda b: ready_ids.index(b.pk))
    more = " (more: `gt ready`)" if len(ready_ids) > PRIME_BEADS else ""
    lines.append(f"## Ready beads, most urgent first{more}")
    if ready:
        lines += [f"- {b.short_id} [P{b.priority} {b.type}] {_cut(b.title, 80)}" for b in ready]
    else:
        lines.append("- none ready. `gt show ID` explains why a bead is not ready.")
    lines.append("")

    notes = list(
        Notification.objects.filter(rig=rig, acked_at__isnull=True).order_by("-created_at", "-id")[
            : PRIME_NOTES + 1
        ]
    )
    if notes:
        shown = notes[:PRIME_NOTES]
        total = row["unacked_notifications"]
        lines.append(f"## Unacked notifications ({total}; newest first)")
        for note in shown:
            times = f" x{note.occurrences}" if note.occurrences > 1 else ""
            lines.append(
                f"- #{note.id} [{note.severity} {note.kind}{times}] {_cut(note.summary, 120)}"
            )
            if note.action:
                lines.append(f"  do: {_cut(note.action, 140)}")
        lines.append("")

    first = ready[0].short_id if ready else "ID"
    lines += [
        "## Next steps (set GT_URL and GT_TOKEN; add --json for machine-readable output)",
        f"- gt claim {first}            start a ready bead (409 if someone holds it)",
        "- gt show ID                 a bead's details, dependencies and why it is not ready",
        '- gt close ID -r "what"      when it is done; prints the beads it unblocked',
        '- gt create "title" --discovered-from ID [-p 0-4] [--blocks ID]   work you found',
        "- gt dep add A B             A cannot start until B closes",
        "- gt inbox / gt ack ID|--all read and acknowledge notifications",
        "- gt heartbeat               every few minutes while you work (else: stalled)",
        "- gt sync                    after committing: refresh ahead/behind and changed files",
        f"- gt done                    commit first; asks to merge `{rig.branch}` into `{target}`",
        "- gt status / gt prime       where things stand",
    ]
    return "\n".join(lines) + "\n"


class PrimeView(APIView):
    """A compact plain-text briefing for an LLM agent at the start of a session."""

    renderer_classes = [PlainTextRenderer, renderers.JSONRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("rig", OpenApiTypes.STR, description="which of your rigs (id or slug)")
        ],
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="the briefing"),
            (200, "application/json"): OpenApiResponse(OpenApiTypes.STR),
        },
    )
    def get(self, request: Request) -> Response:
        agent = calling_agent(request)
        if agent is None:
            return error_response(
                "no_agent",
                "The prime briefing is for agents (call with an agent's token); "
                "people see GET /api/v1/me/.",
                status.HTTP_404_NOT_FOUND,
            )
        wanted = request.query_params.get("rig", "").strip() or None
        return Response(prime_text(agent, wanted))

    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code >= 400:  # errors keep the API's JSON error body
            request.accepted_renderer = renderers.JSONRenderer()
            request.accepted_media_type = "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


# --- a rig's merge request -----------------------------------------------------------------------


class RigMergeRequestView(APIView):
    """`POST rigs/{id}/merge-requests/`: ask to land the rig's branch tip on its merge target
    (its leg's convoy integration branch, else the repository's target). A queued request for
    the same branch is superseded; one being checked or gated answers 409."""

    permission_classes = [RigWrite]

    @extend_schema(request=MergeRequestCreateSerializer, responses={201: MergeRequestSerializer})
    def post(self, request: Request, pk: int) -> Response:
        rig = _get(Rig.objects.select_related("agent", "repository"), "rig", pk)
        self.check_object_permissions(request, rig)
        body = _body(MergeRequestCreateSerializer, request)
        merge_request = services.rig_merge_request(
            rig=rig, priority=body["priority"], requested_by=str(request.user)
        )
        return Response(MergeRequestSerializer(merge_request).data, status=status.HTTP_201_CREATED)


# --- convoys --------------------------------------------------------------------------------------


def _attach_rollups(convoys: list[Convoy]) -> None:
    """The legs and progress of `convoy_rollup` for a page of convoys, in two queries."""
    ids = [c.id for c in convoys]
    legs_by: dict[int, list[Leg]] = defaultdict(list)
    for leg in (
        Leg.objects.filter(convoy_id__in=ids).select_related("rig").order_by("position", "id")
    ):
        legs_by[leg.convoy_id].append(leg)
    edges = list(
        LegDependency.objects.filter(leg__convoy_id__in=ids).values_list("leg_id", "depends_on_id")
    )
    for convoy in convoys:
        legs = legs_by[convoy.id]
        keys = {leg.id: leg.key for leg in legs}
        deps: dict[int, list[int]] = defaultdict(list)
        for leg_id, dep_id in edges:
            if leg_id in keys and dep_id in keys:
                deps[leg_id].append(dep_id)
        waves = convoy_waves(legs, edges)
        wave_of = {leg.id: n for n, wave in enumerate(waves, start=1) for leg in wave}
        counted = [leg for leg in legs if leg.state != Leg.State.CANCELLED]
        landed = sum(1 for leg in counted if leg.state == Leg.State.LANDED)
        convoy.rollup = {
            "legs": [
                {
                    "id": leg.id,
                    "key": leg.key,
                    "title": leg.title,
                    "state": leg.state,
                    "rig": leg.rig_id,
                    "rig_slug": leg.rig.slug if leg.rig else None,
                    "rig_state": leg.rig.state if leg.rig else None,
                    "depends_on": [keys[d] for d in sorted(deps[leg.id])],
                    "wave": wave_of[leg.id],
                }
                for leg in legs
            ],
            "progress": {
                "landed": landed,
                "total": len(counted),
                "percent": round(100 * landed / len(counted)) if counted else 0,
            },
        }


def _convoy_detail(convoy: Convoy) -> dict:
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
        _attach_rollups(page)
        return self.get_paginated_response(ConvoySerializer(page, many=True).data)

    @extend_schema(request=ConvoyCreateSerializer, responses={201: ConvoyDetailSerializer})
    def post(self, request: Request, *args, **kwargs) -> Response:
        body = _body(ConvoyCreateSerializer, request)
        body["repository"] = _get(
            Repository.objects.all(), "repository", body["repository"], "repository"
        )
        body["legs"] = [dict(leg) for leg in body["legs"]]
        body["slug"] = body["slug"] or None
        convoy = services.convoy_create(**body, created_by=request.user)
        return Response(_convoy_detail(convoy), status=status.HTTP_201_CREATED)


class ConvoyDetailView(APIView):
    """A convoy with its legs (`depends_on` keys, wave, rig), progress, what blocks which leg."""

    @extend_schema(responses={200: ConvoyDetailSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(_convoy_detail(_get(Convoy.objects.all(), "convoy", pk)))


class ConvoyLaunchView(APIView):
    """draft → launched: provisions the missing rigs and hands wave 1 to its rigs."""

    permission_classes = [ReadOrOperator]

    @extend_schema(request=None, responses={200: ConvoyDetailSerializer})
    def post(self, request: Request, pk: int) -> Response:
        convoy = services.convoy_launch(convoy=_get(Convoy.objects.all(), "convoy", pk))
        return Response(_convoy_detail(convoy))


class ConvoyCancelView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(request=ConvoyCancelSerializer, responses={200: ConvoyDetailSerializer})
    def post(self, request: Request, pk: int) -> Response:
        convoy = _get(Convoy.objects.all(), "convoy", pk)
        body = _body(ConvoyCancelSerializer, request)
        convoy = services.convoy_cancel(convoy=convoy, reason=body["reason"])
        return Response(_convoy_detail(convoy))


# --- beads ----------------------------------------------------------------------------------------

_ID_FILTERS = ["rig", "leg", "convoy", "repository"]


class BeadPagination(pagination.LimitOffsetPagination):
    """limit/offset like the rest of the API, but the bead query runs once: its ids (an int
    each: the count is their number), then the page by primary key. The ready query is the
    expensive part; the default pagination would run it twice (COUNT, then the page)."""

    max_limit = 200

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
        "closed_at": _iso(bead.closed_at),
        "created_at": _iso(bead.created_at),
        "updated_at": _iso(bead.updated_at),
    }


def _resolve_home(body: dict) -> dict:
    """The rig, leg, convoy and repository named by id in a bead's body (400 when unknown)."""
    models = {
        "rig": Rig.objects.select_related("agent"),
        "leg": Leg.objects.select_related("rig", "convoy"),
        "convoy": Convoy.objects.all(),
        "repository": Repository.objects.all(),
    }
    return {
        name: _get(qs, name, body[name], name) if body.get(name) is not None else None
        for name, qs in models.items()
    }


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
            "status",
            OpenApiTypes.STR,
            enum=Bead.Status.values,
            description="only this status (not with ready)",
        ),
    ],
    methods=["GET"],
)
class BeadListView(generics.ListAPIView):
    """`GET beads/?rig=&ready=true`: a rig's (or a convoy's, a repository's, a pool's) beads.
    `POST beads/`: a new bead in one of your rigs (operators: anywhere, pools included)."""

    serializer_class = BeadSerializer
    pagination_class = BeadPagination
    filter_backends: list = []  # filtering is explicit below, through the selectors

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([bead_row(bead) for bead in page])

    def get_queryset(self):
        params = self.request.query_params
        scope = {name: _id(params, name) for name in _ID_FILTERS}
        pool = _flag(params, "pool")
        if _flag(params, "ready"):
            qs = beads_ready(**scope, pool=pool)
        else:
            status_ = params.get("status") or None
            if status_ and status_ not in Bead.Status.values:
                raise ValidationError(
                    {"status": f"'{status_}' is not one of {', '.join(Bead.Status.values)}."}
                )
            qs = beads_list(**scope, pool=pool, status=status_)
        return qs

    @extend_schema(request=BeadCreateSerializer, responses={201: BeadSerializer})
    def post(self, request: Request) -> Response:
        body = _body(BeadCreateSerializer, request)
        home = _resolve_home(body)
        blocks = [_bead(ref, "blocks") for ref in dict.fromkeys(body.pop("blocks"))]
        found_in = body.pop("discovered_from", None)
        found_in = _bead(found_in, "discovered_from") if found_in is not None else None
        if not is_operator(request.user):
            agent = calling_agent(request)
            rig = home["rig"] or (home["leg"].rig if home["leg"] else None)
            if agent is None:
                raise PermissionDenied("Only operators and agents create beads.")
            if rig is None or rig.agent_id != agent.id:
                raise PermissionDenied(
                    "Agents create beads only in their own rigs: give `rig` (one of yours)."
                )
            for other in blocks:
                _check_bead_write(request, other)  # the edge belongs to the blocked bead
        with transaction.atomic():
            bead = services.bead_create(**{**body, **home})
            for other in blocks:
                services.bead_dependency_add(bead=other, depends_on=bead, type="blocks")
            if found_in is not None:
                services.bead_dependency_add(bead=bead, depends_on=found_in, type="discovered-from")
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


@extend_schema(parameters=[BEAD_PATH])
class BeadDetailView(APIView):
    """A bead with its dependencies, dependents and why it is not ready. PATCH edits it through
    the bead's services: a status change is a state-machine transition (closing dispatches what
    it unblocks; `in_progress` is reached by claiming)."""

    @extend_schema(responses={200: BeadDetailSerializer})
    def get(self, request: Request, ref: str) -> Response:
        return Response(self._detail(_bead(ref)))

    @staticmethod
    def _detail(bead: Bead) -> dict:
        """BeadDetailSerializer's shape (its extra fields are not model attributes: the model's
        reverse relations are already called `dependencies` and `dependents`)."""
        reasons = bead_explain(bead)
        return {
            **BeadSerializer(bead).data,
            "ready": not reasons,
            "not_ready_reasons": reasons,
            "dependencies": _links(
                BeadDependency.objects.filter(bead=bead)
                .select_related("depends_on")
                .order_by("id"),
                "depends_on",
            ),
            "dependents": _links(
                BeadDependency.objects.filter(depends_on=bead)
                .select_related("bead")
                .order_by("id"),
                "bead",
            ),
        }

    @extend_schema(request=BeadUpdateSerializer, responses={200: BeadDetailSerializer})
    def patch(self, request: Request, ref: str) -> Response:
        bead = _bead(ref)
        _check_bead_write(request, bead)
        body = _body(BeadUpdateSerializer, request, partial=True)
        to = body.pop("status", None)
        reason = body.pop("close_reason", "")
        with transaction.atomic():
            if body:
                services.bead_update(bead=bead, values=body)
            if to is not None and to != bead.status:
                if to == Bead.Status.IN_PROGRESS:
                    raise ValidationError(
                        {"status": f"claim it to start it: POST /api/v1/beads/{bead.id}/claim/."}
                    )
                if to == Bead.Status.CLOSED:
                    services.bead_close(bead=bead, reason=reason)
                elif bead.status == Bead.Status.CLOSED and to == Bead.Status.OPEN:
                    services.bead_reopen(bead=bead)
                else:
                    services.bead_transition(bead=bead, to=to)
        return Response(self._detail(_bead(bead.pk)))


@extend_schema(parameters=[BEAD_PATH])
class BeadClaimView(APIView):
    """Claim a ready bead (open → in_progress, you become its assignee). Atomic: of several
    claimers one wins; the others get 409 naming the holder. A bead in another agent's rig is
    refused with 403; a pool bead moves into your rig on its repository."""

    @extend_schema(request=BeadClaimSerializer, responses={200: BeadSerializer})
    def post(self, request: Request, ref: str) -> Response:
        bead = _bead(ref)
        name = _body(BeadClaimSerializer, request).get("agent") or ""
        agent = calling_agent(request)
        if agent is not None:
            if name and name != agent.name:
                raise PermissionDenied("Agents claim beads for themselves only.")
            if bead.rig_id and bead.rig.agent_id != agent.id:
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

    @extend_schema(request=BeadCloseSerializer, responses={200: BeadCloseResultSerializer})
    def post(self, request: Request, ref: str) -> Response:
        bead = _bead(ref)
        _check_bead_write(request, bead)
        body = _body(BeadCloseSerializer, request)
        bead, unblocked = services.bead_close(bead=bead, reason=body["reason"])
        return Response(BeadCloseResultSerializer({"bead": bead, "unblocked": unblocked}).data)


@extend_schema(parameters=[BEAD_PATH])
class BeadDependencyView(APIView):
    """This bead depends on another (`blocks`: it cannot start until that one closes). A
    `blocks` or `parent-child` edge that would close a cycle answers 409 naming the cycle."""

    @extend_schema(request=DependencyCreateSerializer, responses={201: DependencySerializer})
    def post(self, request: Request, ref: str) -> Response:
        bead = _bead(ref)
        _check_bead_write(request, bead)
        body = _body(DependencyCreateSerializer, request)
        depends_on = _bead(body["depends_on"], "depends_on")
        try:
            dependency = services.bead_dependency_add(
                bead=bead, depends_on=depends_on, type=body["type"]
            )
        except DjangoValidationError as exc:
            message = " ".join(exc.messages)
            if "dependency cycle" in message:  # the graph, not the input, refuses the edge
                return error_response("cycle", message, status.HTTP_409_CONFLICT, "depends_on")
            raise
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

    @extend_schema(request=None, responses={200: DependencyRemoveResultSerializer})
    def delete(self, request: Request, ref: str, depends_on: str) -> Response:
        bead = _bead(ref)
        _check_bead_write(request, bead)
        other = _bead(depends_on)
        try:
            unblocked = services.bead_dependency_remove(bead=bead, depends_on=other)
        except DjangoValidationError as exc:  # the only refusal: the edge is not there
            message = " ".join(exc.messages)
            return error_response("not_found", message, status.HTTP_404_NOT_FOUND, "depends_on")
        result = {"bead": bead, "depends_on": other, "unblocked": unblocked}
        return Response(DependencyRemoveResultSerializer(result).data)


# --- notifications --------------------------------------------------------------------------------


def _since(params) -> datetime | None:
    value = params.get("since", "").strip()
    if not value:
        return None
    try:
        parsed = parse_datetime(value.replace(" ", "+"))  # an unescaped '+' arrives as ' '
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValidationError({"since": f"'{value}' is not an ISO 8601 date-time."})
    try:  # in UTC: the database need not understand odd offsets (-22:39) or year 1
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:
        raise ValidationError({"since": f"'{value}' is out of range."}) from None


@extend_schema(
    parameters=[
        OpenApiParameter("rig", OpenApiTypes.INT, description="only this rig's inbox"),
        OpenApiParameter("unacked", OpenApiTypes.BOOL, description="only unacknowledged"),
        OpenApiParameter(
            "since",
            OpenApiTypes.DATETIME,
            description="only those created or changed after this (the `X-Since` of the last "
            "answer)",
        ),
        OpenApiParameter("kind", OpenApiTypes.STR, enum=Notification.Kind.values),
        OpenApiParameter("severity", OpenApiTypes.STR, enum=Notification.Severity.values),
        OpenApiParameter(
            "If-None-Match",
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            description="the `ETag` of the last answer: 304 when nothing changed",
        ),
    ],
    responses={
        200: NotificationSerializer(many=True),
        304: OpenApiResponse(description="Not modified since the `ETag` you sent."),
    },
)
class NotificationListView(generics.ListAPIView):
    """A rig's inbox, newest first. Agents see only their own rigs' notifications.

    Cheap polling: the answer carries an `ETag` (send it back as `If-None-Match`: 304 when
    nothing changed, one small query) and `X-Since` (send it back as `?since=`: only what
    arrived or changed after it)."""

    serializer_class = NotificationSerializer
    filter_backends: list = []

    def get_queryset(self):
        params = self.request.query_params
        qs = Notification.objects.all()
        rig = _id(params, "rig")
        agent = calling_agent(self.request)
        if agent is not None:
            if rig is not None and not Rig.objects.filter(pk=rig, agent=agent).exists():
                raise PermissionDenied(f"rig {rig} is not yours; agents read their own inbox.")
            qs = qs.filter(rig__agent=agent)
        if rig is not None:
            qs = qs.filter(rig_id=rig)
        if _flag(params, "unacked"):
            qs = qs.filter(acked_at__isnull=True)
        since = _since(params)
        if since is not None:
            qs = qs.filter(updated_at__gt=since)
        for name, choices in (
            ("kind", Notification.Kind.values),
            ("severity", Notification.Severity.values),
        ):
            value = params.get(name, "").strip()
            if value and value not in choices:
                raise ValidationError({name: f"'{value}' is not one of {', '.join(choices)}."})
            if value:
                qs = qs.filter(**{name: value})
        return qs.order_by("-created_at", "-id")

    def list(self, request: Request, *args, **kwargs) -> Response:
        qs = self.get_queryset()
        summary = qs.order_by().aggregate(n=Count("id"), last=Max("updated_at"), top=Max("id"))
        identity = f"{request.user}|{request.auth.pk if request.auth else ''}"
        blob = f"{identity}|{sorted(request.query_params.lists())}|{summary}"
        etag = f'W/"{hashlib.sha256(blob.encode()).hexdigest()[:32]}"'
        since = (summary["last"] or timezone.now()).isoformat()
        headers = {"ETag": etag, "X-Since": since, "Cache-Control": "private, no-cache"}
        if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        page = self.paginate_queryset(qs)
        response = self.get_paginated_response(NotificationSerializer(page, many=True).data)
        for name, value in headers.items():
            response[name] = value
        return response


class NotificationAckView(APIView):
    """Acknowledge one notification (acking twice keeps the first time)."""

    permission_classes = [RigWrite]

    def rig_of(self, notification: Notification) -> Rig:
        return notification.rig

    @extend_schema(request=None, responses={200: NotificationSerializer})
    def post(self, request: Request, pk: int) -> Response:
        notification = _get(Notification.objects.select_related("rig"), "notification", pk)
        self.check_object_permissions(request, notification)
        notification = services.notification_ack(notification=notification)
        return Response(NotificationSerializer(notification).data)


class NotificationAckAllView(APIView):
    """Acknowledge every unacked notification of a rig (agents: of all their rigs by default;
    operators must name the rig)."""

    permission_classes = [RigWrite]

    @extend_schema(
        operation_id="v1_notifications_ack_all",
        request=AckAllSerializer,
        responses={200: AckAllResultSerializer},
    )
    def post(self, request: Request) -> Response:
        rig_id = _body(AckAllSerializer, request).get("rig")
        qs = Notification.objects.filter(acked_at__isnull=True)
        if rig_id is not None:
            rig = _get(Rig.objects.all(), "rig", rig_id, "rig")
            if not (is_operator(request.user) or owns_rig(request, rig)):
                raise PermissionDenied("Agents may only act on their own rigs.")
            qs = qs.filter(rig=rig)
        elif calling_agent(request) is not None:
            qs = qs.filter(rig__agent=calling_agent(request))
        elif is_operator(request.user):
            raise ValidationError({"rig": "name the rig whose notifications to acknowledge."})
        else:
            raise PermissionDenied("Only operators and agents acknowledge notifications.")
        acked = 0
        with transaction.atomic():
            for notification in qs.order_by("id"):
                services.notification_ack(notification=notification)
                acked += 1
        return Response({"acked": acked})
