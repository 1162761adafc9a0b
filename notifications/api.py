"""Thin DRF views of a rig's inbox: list (cheap polling with ETag and `since`), acknowledge one,
acknowledge all. Domain refusals (`common.errors.Refusal`) become their status in `common.api`."""

import hashlib
from datetime import UTC, datetime
from functools import partial

from django.db.models import Count, Max, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import FieldErrors
from common.errors import Refusal
from common.filters import list_param, query_check
from common.params import id_or_none, optional_id, parse_flag
from notifications import services
from notifications.models import ASKS_PERSON_KINDS, Notification
from notifications.serializers import (
    AckAllResultSerializer,
    AckAllSerializer,
    NotificationSerializer,
)
from rigs.auth import calling_agent
from rigs.models import Rig
from rigs.permissions import RigWrite, is_operator, owns_rig


def _choice(params, name: str, choices: list[str]) -> str:
    value = params.get(name, "").strip()
    if value and value not in choices:
        raise ValidationError({name: f"'{value}' is not one of {', '.join(choices)}."})
    return value


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


_CHOICES = {
    "kind": Notification.Kind.values,
    "severity": Notification.Severity.values,
    "state": Notification.State.values,
}


@extend_schema(
    summary="Read a rig's inbox",
    parameters=[
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

    A notice with a `topic` is a state: one open notice per rig and cause, updated in place
    (`revisions` keeps the earlier versions) until it is `resolved` by what answers it or
    `acknowledged`.

    Cheap polling: the answer carries an `ETag` (send it back as `If-None-Match`: 304 when
    nothing changed, one small query) and `X-Since` (send it back as `?since=`: only what
    arrived or changed after it)."""

    serializer_class = NotificationSerializer
    list_params = [
        list_param("rig", "only this rig's inbox", "integer", minimum=1),
        list_param(
            "unacked", "only open notices (neither acknowledged nor resolved): the inbox", "boolean"
        ),
        list_param(
            "since",
            "only those created or changed after this (the `X-Since` of the last answer)",
            format="date-time",
        ),
        *(list_param(name, f"only this {name}", enum=values) for name, values in _CHOICES.items()),
    ]

    def get_queryset(self):
        params = self.request.query_params
        errors = FieldErrors()  # every bad parameter named at once
        rig = errors.check(partial(optional_id, params, "rig"))
        unacked = errors.check(partial(parse_flag, params, "unacked"))
        since = errors.check(partial(_since, params))
        chosen = {n: errors.check(partial(_choice, params, n, c)) for n, c in _CHOICES.items()}
        errors.check(partial(query_check, self.request, Notification.objects.none(), self))
        errors.raise_any()
        qs = Notification.objects.all()
        agent = calling_agent(self.request)
        if agent is not None:
            if rig is not None and not Rig.objects.filter(pk=rig, agent=agent).exists():
                raise PermissionDenied(f"rig {rig} is not yours; agents read their own inbox.")
            qs = qs.filter(rig__agent=agent)
        if rig is not None:
            qs = qs.filter(rig_id=rig)
        if unacked:
            qs = qs.filter(state=Notification.State.OPEN)
        if since is not None:
            qs = qs.filter(updated_at__gt=since)
        qs = qs.filter(**{name: value for name, value in chosen.items() if value})
        return qs.order_by("-created_at", "-id")

    def list(self, request: Request, *args, **kwargs) -> Response:
        qs = self.filter_queryset(self.get_queryset())
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


def _asks_a_person() -> Q:
    """Open notices that ask a person (an escalation, an ended turn): a person answers them,
    so an agent's ack leaves them open (the runner waits for that answer)."""
    return Q(kind__in=ASKS_PERSON_KINDS, state=Notification.State.OPEN)


class NotificationAckView(APIView):
    """Acknowledge one notification (acking twice keeps the first time). An agent cannot ack
    a notice that asks a person (its escalation, its ended turn): 409 `asks_a_person`."""

    permission_classes = [RigWrite]

    def rig_of(self, notification: Notification) -> Rig:
        return notification.rig

    @extend_schema(
        summary="Acknowledge a notification", request=None, responses={200: NotificationSerializer}
    )
    def post(self, request: Request, pk: int) -> Response:
        number = id_or_none(pk)  # (an id too large for the database is no notification)
        notification = (
            Notification.objects.select_related("rig").filter(pk=number).first()
            if number is not None
            else None
        )
        if notification is None:
            raise NotFound(f"notification {pk} does not exist.")
        self.check_object_permissions(request, notification)
        if (
            calling_agent(request) is not None
            and Notification.objects.filter(_asks_a_person(), pk=notification.pk).exists()
        ):
            raise Refusal(
                f"notification #{notification.pk} asks a person; it stays open until one answers "
                "it (or launches the agent again).",
                code="asks_a_person",
                field="notification",
            )
        notification = services.notification_ack(notification=notification)
        return Response(NotificationSerializer(notification).data)


class NotificationAckAllView(APIView):
    """Acknowledge every open notification of a rig (agents: of all their rigs by default;
    operators must name the rig). An agent's ack leaves the notices that ask a person open."""

    permission_classes = [RigWrite]

    @extend_schema(
        summary="Acknowledge a rig's notifications",
        operation_id="v1_notifications_ack_all",
        request=AckAllSerializer,
        responses={200: AckAllResultSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = AckAllSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rig_id = serializer.validated_data.get("rig")
        agent = calling_agent(request)
        if rig_id is not None:
            rig = Rig.objects.filter(pk=rig_id).first()
            if rig is None:
                raise ValidationError({"rig": f"rig {rig_id} does not exist."})
            if not (is_operator(request.user) or owns_rig(request, rig)):
                raise PermissionDenied("Agents may only act on their own rigs.")
            inbox = Notification.objects.filter(rig=rig)
        elif agent is not None:
            inbox = Notification.objects.filter(rig__agent=agent)
        elif is_operator(request.user):
            raise ValidationError({"rig": "name the rig whose notifications to acknowledge."})
        else:
            raise PermissionDenied("Only operators and agents acknowledge notifications.")
        if agent is not None:
            inbox = inbox.exclude(_asks_a_person())
        return Response({"acked": services.notifications_ack(notifications=inbox)})
