"""/api/v1/: the agents' API (the contract is "Agent API (v1)" in DESIGN.md). Each app
contributes its views; objects are addressed by id (beads also by short id, `gt-a1b2`)."""

from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from common.errors import error_body
from convoys import api as convoys_api
from events import api as events_api
from notifications import api as notifications_api
from rigs import api as rigs_api
from runner import api as runner_api


@csrf_exempt  # a token client's POST to a wrong path gets the 404, not a CSRF page
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Unknown paths under /api/v1/ answer with the API's error body, not an HTML page."""
    return JsonResponse(error_body("not_found", f"no such endpoint: {request.path}"), status=404)


urlpatterns = [
    # who am I
    path("me/", convoys_api.MeView.as_view(), name="me"),
    path("me/prime/", convoys_api.PrimeView.as_view(), name="me-prime"),
    # repositories and rigs
    path("repositories/", rigs_api.RepositoryListView.as_view(), name="repository-list"),
    path(
        "repositories/<int:pk>/", rigs_api.RepositoryDetailView.as_view(), name="repository-detail"
    ),
    path("rigs/", rigs_api.RigListView.as_view(), name="rig-list"),
    path("rigs/<int:pk>/", rigs_api.RigDetailView.as_view(), name="rig-detail"),
    path("rigs/<int:pk>/heartbeat/", rigs_api.RigHeartbeatView.as_view(), name="rig-heartbeat"),
    path("rigs/<int:pk>/sync/", rigs_api.RigSyncView.as_view(), name="rig-sync"),
    path("rigs/<int:pk>/retry/", rigs_api.RigRetryView.as_view(), name="rig-retry"),
    path("rigs/<int:pk>/teardown/", rigs_api.RigTeardownView.as_view(), name="rig-teardown"),
    path("rigs/<int:pk>/end-turn/", convoys_api.RigTurnEndView.as_view(), name="rig-end-turn"),
    path(
        "rigs/<int:pk>/merge-requests/",
        convoys_api.RigMergeRequestView.as_view(),
        name="rig-merge-request",
    ),
    # agent runs
    path("rigs/<int:pk>/runs/", runner_api.RigRunLaunchView.as_view(), name="rig-run-launch"),
    path("runs/", runner_api.AgentRunListView.as_view(), name="run-list"),
    path("runs/<int:pk>/", runner_api.AgentRunDetailView.as_view(), name="run-detail"),
    path("runs/<int:pk>/stop/", runner_api.AgentRunStopView.as_view(), name="run-stop"),
    path("runs/<int:pk>/log/", runner_api.AgentRunLogView.as_view(), name="run-log"),
    path("runs/<int:pk>/usage/", runner_api.AgentRunUsageView.as_view(), name="run-usage"),
    # budgets
    path("budgets/", runner_api.BudgetListView.as_view(), name="budget-list"),
    path("budgets/<int:pk>/", runner_api.BudgetDetailView.as_view(), name="budget-detail"),
    # the merge queue
    path("merge-requests/", rigs_api.MergeRequestListView.as_view(), name="merge-request-list"),
    path(
        "merge-requests/<int:pk>/",
        rigs_api.MergeRequestDetailView.as_view(),
        name="merge-request-detail",
    ),
    # convoys
    path("convoys/", convoys_api.ConvoyListView.as_view(), name="convoy-list"),
    path("convoys/import/", convoys_api.ConvoyImportView.as_view(), name="convoy-import"),
    path("convoys/<int:pk>/", convoys_api.ConvoyDetailView.as_view(), name="convoy-detail"),
    path("convoys/<int:pk>/launch/", convoys_api.ConvoyLaunchView.as_view(), name="convoy-launch"),
    path("convoys/<int:pk>/cancel/", convoys_api.ConvoyCancelView.as_view(), name="convoy-cancel"),
    # beads
    path("beads/", convoys_api.BeadListView.as_view(), name="bead-list"),
    path("beads/blocked/", convoys_api.BeadBlockedView.as_view(), name="bead-blocked"),
    path("beads/<str:ref>/", convoys_api.BeadDetailView.as_view(), name="bead-detail"),
    path("beads/<str:ref>/claim/", convoys_api.BeadClaimView.as_view(), name="bead-claim"),
    path("beads/<str:ref>/close/", convoys_api.BeadCloseView.as_view(), name="bead-close"),
    path("beads/<str:ref>/release/", convoys_api.BeadReleaseView.as_view(), name="bead-release"),
    path("beads/<str:ref>/comments/", convoys_api.BeadCommentView.as_view(), name="bead-comments"),
    path(
        "beads/<str:ref>/dependencies/",
        convoys_api.BeadDependencyView.as_view(),
        name="bead-dependencies",
    ),
    path(
        "beads/<str:ref>/dependencies/<str:depends_on>/",
        convoys_api.BeadDependencyDetailView.as_view(),
        name="bead-dependency-detail",
    ),
    # inbox
    path(
        "notifications/", notifications_api.NotificationListView.as_view(), name="notification-list"
    ),
    path(
        "notifications/ack/",
        notifications_api.NotificationAckAllView.as_view(),
        name="notification-ack-all",
    ),
    path(
        "notifications/<int:pk>/ack/",
        notifications_api.NotificationAckView.as_view(),
        name="notification-ack",
    ),
    path(
        "notifications/<int:pk>/answer/",
        convoys_api.NotificationAnswerView.as_view(),
        name="notification-answer",
    ),
    # coordination: messages between rigs, questions to people
    path("messages/", convoys_api.MessageCreateView.as_view(), name="message-create"),
    path("escalations/", convoys_api.EscalationCreateView.as_view(), name="escalation-create"),
    path(
        "merge-requests/<int:pk>/approve/",
        convoys_api.MergeRequestApproveView.as_view(),
        name="merge-request-approve",
    ),
    path(
        "merge-requests/<int:pk>/request-changes/",
        convoys_api.MergeRequestRequestChangesView.as_view(),
        name="merge-request-request-changes",
    ),
    # reviews: people's comments on a rig's change, the agent's answers
    path(
        "review-comments/", convoys_api.ReviewCommentListView.as_view(), name="review-comment-list"
    ),
    path(
        "review-comments/<int:pk>/",
        convoys_api.ReviewCommentDetailView.as_view(),
        name="review-comment-detail",
    ),
    path(
        "review-comments/<int:pk>/reply/",
        convoys_api.ReviewCommentReplyView.as_view(),
        name="review-comment-reply",
    ),
    path(
        "review-comments/<int:pk>/resolve/",
        convoys_api.ReviewCommentResolveView.as_view(),
        name="review-comment-resolve",
    ),
    # the event log
    path("events/", events_api.EventListView.as_view(), name="event-list"),
    # the CLI
    path("cli/gt", rigs_api.CliDownloadView.as_view(), name="cli-gt"),
    # last: anything else is the API's 404
    re_path(r"^(?P<rest>[\s\S]*)$", not_found),
]
