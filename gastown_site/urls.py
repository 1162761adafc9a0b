from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from convoys import views as convoy_views

# The board's pages, their live fragments (`.../live/`, `board/...`) and the POSTs behind
# their controls; namespaced (`board:rig-detail`) so their names never shadow the API's.
board_urls = [
    path("", convoy_views.board_view, name="board"),
    path("board/columns/", convoy_views.board_columns, name="board-columns"),
    path("board/card/<int:pk>/", convoy_views.board_card, name="board-card"),
    path("convoys/new/", convoy_views.convoy_new, name="convoy-new"),
    path("convoys/<int:pk>/", convoy_views.convoy_detail, name="convoy-detail"),
    path("convoys/<int:pk>/live/", convoy_views.convoy_live, name="convoy-live"),
    path("convoys/<int:pk>/move/", convoy_views.convoy_move, name="convoy-move"),
    path("convoys/<int:pk>/launch/", convoy_views.convoy_launch, name="convoy-launch"),
    path("convoys/<int:pk>/cancel/", convoy_views.convoy_cancel, name="convoy-cancel"),
    path(
        "convoys/<int:pk>/landing-retry/",
        convoy_views.convoy_landing_retry,
        name="convoy-landing-retry",
    ),
    path("rigs/<int:pk>/", convoy_views.rig_detail, name="rig-detail"),
    path("rigs/<int:pk>/live/", convoy_views.rig_live, name="rig-live"),
    path("rigs/<int:pk>/merge/", convoy_views.rig_merge, name="rig-merge"),
    path("rigs/<int:pk>/retry/", convoy_views.rig_retry, name="rig-retry-page"),
    path("rigs/<int:pk>/sync/", convoy_views.rig_sync, name="rig-sync-page"),
    path("rigs/<int:pk>/teardown/", convoy_views.rig_teardown, name="rig-teardown-page"),
    path("rigs/<int:pk>/launch/", convoy_views.rig_launch, name="rig-launch"),
    path("runs/<int:pk>/stop/", convoy_views.run_stop, name="run-stop"),
    path(
        "notifications/<int:pk>/ack/", convoy_views.notification_ack, name="notification-ack-page"
    ),
    path("repositories/", convoy_views.repository_list, name="repositories"),
    path("repositories/<int:pk>/queue/", convoy_views.merge_queue, name="merge-queue"),
    path(
        "repositories/<int:pk>/queue/live/",
        convoy_views.merge_queue_live,
        name="merge-queue-live",
    ),
]

urlpatterns = [
    path("", include((board_urls, "board"))),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="registration/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", convoy_views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("gastown_site.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
