"""`GET me/` (who am I) and `GET me/prime/` (the briefing text, `convoys.briefing`)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import error_response
from convoys.briefing import agent_overview, prime_text
from convoys.serializers import MeSerializer
from rigs.auth import calling_agent
from rigs.permissions import person_roles


class MeView(APIView):
    """Who am I. An agent gets its rigs, current assignment and unread notifications count; a
    person (session or personal token) gets 200 too, with `kind: person`, the username and
    roles, and no rigs (people do not own rigs)."""

    @extend_schema(summary="Who am I", responses={200: MeSerializer})
    def get(self, request: Request) -> Response:
        agent = calling_agent(request)
        if agent is not None:
            return Response(MeSerializer(agent_overview(agent)).data)
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


class PrimeView(APIView):
    """A compact plain-text briefing for an LLM agent at the start of a session."""

    renderer_classes = [PlainTextRenderer, renderers.JSONRenderer]

    @extend_schema(
        summary="The agent's briefing",
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
