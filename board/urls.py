"""The board's URLs: its pages, their live fragments (`.../live/`, `board/...`) and the POSTs
behind their controls; included under the "board" namespace (`board:rig-detail`), so their names
never shadow the API's."""

from django.urls import path

from board import views

app_name = "board"

urlpatterns = [
    path("", views.board_view, name="board"),
    path("board/columns/", views.board_columns, name="board-columns"),
    path("board/card/<int:pk>/", views.board_card, name="board-card"),
    path("convoys/new/", views.convoy_new, name="convoy-new"),
    path("convoys/import/", views.convoy_import, name="convoy-import"),
    path("convoys/<int:pk>/", views.convoy_detail, name="convoy-detail"),
    path("convoys/<int:pk>/live/", views.convoy_live, name="convoy-live"),
    path("convoys/<int:pk>/feed/", views.convoy_feed, name="convoy-feed"),
    path("convoys/<int:pk>/move/", views.convoy_move, name="convoy-move"),
    path("convoys/<int:pk>/launch/", views.convoy_launch, name="convoy-launch"),
    path("convoys/<int:pk>/cancel/", views.convoy_cancel, name="convoy-cancel"),
    path(
        "convoys/<int:pk>/landing-retry/", views.convoy_landing_retry, name="convoy-landing-retry"
    ),
    path("rigs/<int:pk>/", views.rig_detail, name="rig-detail"),
    path("rigs/<int:pk>/live/", views.rig_live, name="rig-live"),
    path("rigs/<int:pk>/merge/", views.rig_merge, name="rig-merge"),
    path("rigs/<int:pk>/retry/", views.rig_retry, name="rig-retry-page"),
    path("rigs/<int:pk>/sync/", views.rig_sync, name="rig-sync-page"),
    path("rigs/<int:pk>/teardown/", views.rig_teardown, name="rig-teardown-page"),
    path("rigs/<int:pk>/launch/", views.rig_launch, name="rig-launch"),
    path("rigs/<int:pk>/diff/", views.rig_diff, name="rig-diff"),
    path("rigs/<int:pk>/diff/file/", views.rig_diff_file, name="rig-diff-file"),
    path("rigs/<int:pk>/review/", views.review_comment_add, name="rig-review"),
    path("merge-requests/<int:pk>/diff/", views.merge_request_diff, name="mr-diff"),
    path(
        "merge-requests/<int:pk>/diff/file/",
        views.merge_request_diff_file,
        name="mr-diff-file",
    ),
    path("merge-requests/<int:pk>/approve/", views.merge_request_approve, name="mr-approve"),
    path(
        "merge-requests/<int:pk>/request-changes/",
        views.merge_request_request_changes,
        name="mr-request-changes",
    ),
    path("legs/<int:pk>/diff/", views.leg_diff, name="leg-diff"),
    path(
        "review-comments/<int:pk>/reply/", views.review_comment_reply, name="review-comment-reply"
    ),
    path(
        "review-comments/<int:pk>/resolve/",
        views.review_comment_resolve,
        name="review-comment-resolve",
    ),
    path("runs/<int:pk>/stop/", views.run_stop, name="run-stop"),
    path("notifications/<int:pk>/ack/", views.notification_ack, name="notification-ack-page"),
    path(
        "notifications/<int:pk>/answer/",
        views.notification_answer,
        name="notification-answer-page",
    ),
    path("escalations/", views.escalations, name="escalations"),
    path("escalations/live/", views.escalations_live, name="escalations-live"),
    path("escalations/badge/", views.escalations_badge, name="escalations-badge"),
    path("budgets/", views.budgets, name="budgets"),
    path("budgets/set/", views.budget_set, name="budget-set"),
    path("budgets/<int:pk>/delete/", views.budget_delete, name="budget-delete"),
    path("repositories/", views.repository_list, name="repositories"),
    path("repositories/add/", views.repository_add, name="repository-add"),
    path("repositories/<int:pk>/queue/", views.merge_queue, name="merge-queue"),
    path("repositories/<int:pk>/queue/live/", views.merge_queue_live, name="merge-queue-live"),
]
