"""Coordination: messages between rigs (`POST messages/`), escalations to a person
(`POST escalations/`) and their answers (`POST notifications/{id}/answer/`), an agent's turn
ended without a merge (`POST rigs/{id}/end-turn/`), comments on beads, releasing a claim, and
the blocked beads with what blocks them. Thin: validate, check who may, call one service."""

from functools import partial

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import FieldErrors
from common.errors import Refusal
from common.filters import query_check
from common.params import id_or_none, optional_id
from convoys.api.base import bead_by_ref, body, get_object
from convoys.api.beads import _ID_FILTERS, BEAD_PATH, SCOPE_PARAMS, BeadPagination
from convoys.models import Bead, BeadComment
from convoys.selectors import beads_blocked, beads_blocked_reasons, rigs_current_legs
from convoys.serializers import (
    AnswerResultSerializer,
    AnswerSerializer,
    BeadCommentCreateSerializer,
    BeadCommentSerializer,
    BeadSerializer,
    BlockedBeadSerializer,
    EscalationCreateSerializer,
    MessageCreateSerializer,
    MessageResultSerializer,
    TurnEndSerializer,
)
from convoys.services import coordination
from notifications.models import Notification
from notifications.serializers import NotificationSerializer
from rigs.auth import calling_agent
from rigs.models import Agent, Rig
from rigs.permissions import (
    RigWrite,
    agent_repository_ids,
    is_operator,
    may_coordinate_in,
)


def _my_rig(agent: Agent, ref, field: str) -> Rig:
    """One of the agent's rigs, by id or slug (403 when it is another agent's)."""
    qs = Rig.objects.select_related("repository", "agent")
    number = id_or_none(ref)
    rig = (qs.filter(pk=number) if number is not None else qs.filter(agent=agent, slug=ref)).first()
    if rig is None:
        raise ValidationError({field: f"rig {ref} does not exist."})
    if rig.agent_id != agent.pk:
        raise PermissionDenied(f"rig {rig.slug} is not yours: agents speak from their own rigs.")
    return rig


def _home_rig(agent: Agent, repository_id: int | None) -> Rig | None:
    """The agent's rig a message or a question comes from when it does not say: its live rig
    (on `repository_id`, when given) with a current leg, else the newest live one."""
    rigs = Rig.objects.filter(agent=agent, state__in=Rig.LIVE_STATES).select_related(
        "repository", "agent"
    )
    if repository_id is not None:
        rigs = rigs.filter(repository_id=repository_id)
    rigs = list(rigs.order_by("-created_at", "-id"))
    legs = rigs_current_legs([rig.id for rig in rigs], dependencies=False)
    return next((rig for rig in rigs if rig.id in legs), rigs[0] if rigs else None)


def _inbox_agents(notice: Notification) -> set[int | None]:
    """The agents a notice concerns: its rig's, and its sender rig's (they may reply to it)."""
    return {notice.rig.agent_id, notice.source_rig.agent_id if notice.source_rig else None}


def _notification(pk, field: str | None = None) -> Notification:
    return get_object(
        Notification.objects.select_related("rig", "source_rig"), "notification", pk, field
    )


class MessageCreateView(APIView):
    """Send a message into another rig's inbox (kind `message`, from your rig), or into every
    rig with work of a convoy. It arrives like any notification: in the inbox, on the rig's
    websocket group, on the board. `reply_to` threads it under the notice it answers; with no
    recipient it goes back to the rig that sent that notice. Agents message rigs of the
    repositories they work in; operators any rig."""

    @extend_schema(
        summary="Send a message to rigs",
        request=MessageCreateSerializer,
        responses={201: MessageResultSerializer},
    )
    def post(self, request: Request) -> Response:
        agent = calling_agent(request)
        if agent is None and not is_operator(request.user):
            raise PermissionDenied("Only agents and operators send messages.")
        repositories = agent_repository_ids(agent) if agent is not None else None
        errors = FieldErrors()  # bad fields, a bad `from_rig`, `reply_to`, `to…`: named together
        data = body(MessageCreateSerializer, request, errors=errors)
        from_rig = None
        if data.get("from_rig") is not None:
            if agent is None:
                errors.add(ValidationError({"from_rig": "people send messages without a rig."}))
            else:
                from_rig = errors.check(partial(_my_rig, agent, data["from_rig"], "from_rig"))
        reply_to = None
        if data.get("reply_to") is not None:
            reply_to = errors.check(partial(_notification, data["reply_to"], "reply_to"))
        addressing = {k: data.get(k) for k in ("to", "to_rig", "to_agent", "to_convoy")}
        found = None
        if "reply_to" not in data:  # (a reply is addressed below, once its notice is known)
            find = partial(coordination.message_recipients, **addressing, repositories=repositories)
            try:
                found = errors.check(find)
            except Refusal:  # (nobody to tell: said once the fields are right)
                if not errors.detail:
                    raise
        errors.raise_any()
        if reply_to is not None and agent is not None and agent.pk not in _inbox_agents(reply_to):
            raise PermissionDenied(
                f"notification {reply_to.pk} is not in your inbox: reply to your own."
            )
        if reply_to is not None and not any(v not in (None, "") for v in addressing.values()):
            back = reply_to.source_rig
            if back is not None and agent is not None and back.agent_id == agent.pk:
                raise ValidationError(
                    {"to": f"#{reply_to.pk} came from your own rig {back.slug}: say who to tell."}
                )
            if back is None:
                who = f" ({reply_to.sender})" if reply_to.sender else ""
                raise ValidationError(
                    {"to": f"#{reply_to.pk} came from no rig{who}: say who to tell "
                     "(a person is asked with `gt escalate`)."}
                )  # fmt: skip
            # to the rig it came from; when that rig's work is over, to its agent's rig with work
            addressing.update(coordination.reply_address(back))
        recipients, addressed = found or coordination.message_recipients(
            **addressing, repositories=repositories
        )
        for rig in recipients:
            if not may_coordinate_in(request, rig.repository_id):
                raise PermissionDenied(
                    f"rig {rig.slug} works on repository {rig.repository.name}, where you have "
                    "no rig: agents message rigs of their own repositories."
                )
        if agent is not None and from_rig is None:
            from_rig = _home_rig(agent, recipients[0].repository_id if recipients else None)
        if (
            from_rig is not None
            and recipients
            and from_rig.repository_id != recipients[0].repository_id
        ):
            raise ValidationError(
                {"from_rig": f"rig {from_rig.slug} works on another repository than {addressed}."}
            )
        sent = coordination.message_send(
            recipients=recipients,
            text=data["text"],
            sender=agent.name if agent is not None else request.user.get_username(),
            from_rig=from_rig,
            reply_to=reply_to,
            addressed=addressed,
        )
        result = {"to": addressed, "count": len(sent), "messages": sent}
        return Response(MessageResultSerializer(result).data, status=status.HTTP_201_CREATED)


class EscalationCreateView(APIView):
    """Ask a person (agents): a critical `escalation` notice on your rig, shown on the rig page,
    the convoy page and the board's header, and sent to the webhooks. An operator answers it
    (`POST notifications/{id}/answer/`); the answer arrives in your inbox."""

    @extend_schema(
        summary="Ask a person",
        request=EscalationCreateSerializer,
        responses={201: NotificationSerializer},
    )
    def post(self, request: Request) -> Response:
        agent = calling_agent(request)
        if agent is None:
            raise PermissionDenied(
                "Agents escalate; people answer escalations (POST notifications/{id}/answer/)."
            )
        errors = FieldErrors()  # bad fields, a bad `bead` and a bad `rig`: named together
        data = body(EscalationCreateSerializer, request, errors=errors)
        bead = rig = None
        if data.get("bead") is not None:
            bead = errors.check(partial(bead_by_ref, data["bead"], "bead"))
        if bead is not None and not may_coordinate_in(
            request, coordination.bead_repository_id(bead)
        ):
            raise PermissionDenied(
                f"{bead.short_id} belongs to a repository where you have no rig: ask about "
                "beads of your own repositories."
            )
        if data.get("rig") is not None:
            rig = errors.check(partial(_my_rig, agent, data["rig"], "rig"))
        errors.raise_any()
        if rig is None and bead is not None and bead.rig_id and bead.rig.agent_id == agent.pk:
            rig = bead.rig
        if rig is None:
            rig = _home_rig(agent, None)
            if rig is None:
                raise ValidationError({"rig": "you have no live rig to ask from."})
        notice = coordination.escalation_raise(rig=rig, text=data["text"], agent=agent, bead=bead)
        return Response(NotificationSerializer(notice).data, status=status.HTTP_201_CREATED)


class NotificationAnswerView(APIView):
    """Answer an escalation or an ended turn (operators): the answer goes into the rig's inbox
    as a `message` that replies to it, and the notice is resolved with the answer. 409
    `already_resolved` when it was answered (or resolved) meanwhile; 400 `not_a_question` for a
    notice that asks no person."""

    @extend_schema(
        summary="Answer an escalation",
        tags=["escalations"],
        request=AnswerSerializer,
        responses={200: AnswerResultSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        if not is_operator(request.user):
            raise PermissionDenied("Only operators answer escalations.")
        notice = _notification(pk)
        data = body(AnswerSerializer, request)
        notice, reply = coordination.notice_answer(
            notification=notice, answer=data["answer"], by=request.user.get_username()
        )
        return Response(AnswerResultSerializer({"notification": notice, "reply": reply}).data)


class RigTurnEndView(APIView):
    """End the agent's turn without a merge (`gt done --status escalated|deferred`): an open
    notice (a critical `escalation`, or a `deferred` warning) shown on the rig page, the convoy
    page and the board's header; the runner does not relaunch the agent for its leg until a
    person answers it or launches the agent. 409 `work_finished` for a rig whose work is done."""

    permission_classes = [RigWrite]

    @extend_schema(
        summary="End the agent's turn without a merge",
        request=TurnEndSerializer,
        responses={201: NotificationSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        rig = get_object(Rig.objects.select_related("agent", "repository"), "rig", pk)
        self.check_object_permissions(request, rig)
        data = body(TurnEndSerializer, request)
        agent = calling_agent(request)
        notice = coordination.rig_turn_end(
            rig=rig,
            status=data["status"],
            reason=data["reason"],
            by=agent.name if agent is not None else request.user.get_username(),
        )
        return Response(NotificationSerializer(notice).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[BEAD_PATH])
@extend_schema_view(
    get=extend_schema(
        summary="List a bead's comments", description="A bead's comments, oldest first."
    )
)
class BeadCommentView(generics.ListAPIView):
    """A bead's comments, oldest first; `POST` adds one (agents: on beads of the repositories
    they work in; operators anywhere). Someone else's comment is told to the bead's rig."""

    serializer_class = BeadCommentSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # (the schema's generator: no bead)
            return BeadComment.objects.none()
        bead = bead_by_ref(self.kwargs["ref"])
        return (
            BeadComment.objects.filter(bead=bead)
            .select_related("bead")
            .order_by("created_at", "id")
        )

    @extend_schema(
        summary="Comment on a bead",
        description="Add a comment (agents: on beads of the repositories they work in; "
        "operators anywhere). Someone else's comment is told to the bead's rig.",
        request=BeadCommentCreateSerializer,
        responses={201: BeadCommentSerializer},
    )
    def post(self, request: Request, ref: str) -> Response:
        bead = bead_by_ref(ref)
        agent = calling_agent(request)
        if agent is None and not is_operator(request.user):
            raise PermissionDenied("Only agents and operators comment on beads.")
        repository_id = coordination.bead_repository_id(bead)
        if not may_coordinate_in(request, repository_id):
            raise PermissionDenied(
                f"{bead.short_id} belongs to a repository where you have no rig: agents comment "
                "on beads of their own repositories."
            )
        text = body(BeadCommentCreateSerializer, request)["text"]
        comment = coordination.bead_comment_add(
            bead=bead, text=text, agent=agent, user=None if agent else request.user
        )
        return Response(BeadCommentSerializer(comment).data, status=status.HTTP_201_CREATED)


@extend_schema(parameters=[BEAD_PATH])
class BeadReleaseView(APIView):
    """Give a claim up: an in-progress bead goes back to open and its assignee is cleared, so
    another agent may claim it. Its holder, or an operator; 409 `not_claimed` when nobody
    holds it."""

    @extend_schema(summary="Release a claim", request=None, responses={200: BeadSerializer})
    def post(self, request: Request, ref: str) -> Response:
        bead = bead_by_ref(ref)
        agent = calling_agent(request)
        if agent is not None:
            if bead.assignee_id is not None and bead.assignee_id != agent.pk:
                raise PermissionDenied(
                    f"{bead.short_id} is held by {bead.assignee.name}: only its holder or an "
                    "operator releases it."
                )
            holder = agent
        elif is_operator(request.user):
            holder = None
        else:
            raise PermissionDenied("Only the bead's holder or an operator releases it.")
        bead = coordination.bead_release(bead=bead, by=str(request.user), holder=holder)
        return Response(BeadSerializer(bead).data)


@extend_schema_view(get=extend_schema(summary="List blocked beads"))
class BeadBlockedView(generics.ListAPIView):
    """The beads that wait, and what they wait for (`gt blocked`): not closed, not in
    progress, not ready. Each with `reasons` (one line each: the same rules as `ready`) and
    `blocked_by` (the open beads it waits for). Most urgent first."""

    serializer_class = BlockedBeadSerializer
    pagination_class = BeadPagination
    list_params = SCOPE_PARAMS

    def get_queryset(self):
        params = self.request.query_params
        errors = FieldErrors()
        scope = {name: errors.check(partial(optional_id, params, name)) for name in _ID_FILTERS}
        errors.check(partial(query_check, self.request, Bead.objects.none(), self))
        errors.raise_any()
        return beads_blocked(**scope)

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        why = beads_blocked_reasons(page)
        rows = []
        for bead in page:
            reasons, blockers = why[bead.pk]
            bead.reasons = reasons
            bead.blocked_by = [
                {
                    "id": b.pk,
                    "short_id": b.short_id,
                    "title": b.title,
                    "status": b.status,
                    "rig": b.rig_id,
                    "assignee": b.assignee.name if b.assignee_id else None,
                }
                for b in blockers
            ]
            rows.append(bead)
        return self.get_paginated_response(BlockedBeadSerializer(rows, many=True).data)
