"""`POST rigs/{id}/merge-requests/`: a rig asks to land its branch (here, not in rigs: where
it lands depends on the rig's leg)."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from convoys import services
from convoys.api.base import body, get_object
from rigs.models import Rig
from rigs.permissions import RigWrite
from rigs.serializers import MergeRequestCreateSerializer, MergeRequestSerializer


class RigMergeRequestView(APIView):
    """Ask to land the rig's branch tip on its merge target (its leg's convoy integration
    branch, else the repository's target). A queued request for the same branch is superseded;
    one being checked or gated answers 409. Refused with 409 `open_work` while the rig's leg has
    open or in-progress beads or its worktree has uncommitted changes (`force: true` overrides,
    recorded as `forced`), and with 409 `work_finished` once its leg has landed."""

    permission_classes = [RigWrite]

    @extend_schema(
        summary="Ask to land a rig's branch",
        tags=["merge-requests"],
        request=MergeRequestCreateSerializer,
        responses={201: MergeRequestSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        rig = get_object(Rig.objects.select_related("agent", "repository"), "rig", pk)
        self.check_object_permissions(request, rig)
        data = body(MergeRequestCreateSerializer, request)
        merge_request = services.rig_merge_request(
            rig=rig, priority=data["priority"], requested_by=str(request.user), force=data["force"]
        )
        return Response(MergeRequestSerializer(merge_request).data, status=status.HTTP_201_CREATED)
