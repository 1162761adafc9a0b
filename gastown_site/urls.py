from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from board import views as board_views
from metrics.views import metrics_view

urlpatterns = [
    path("", include("board.urls")),  # the board's pages, namespace "board"
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="registration/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", board_views.healthz, name="healthz"),  # no login: probes call it
    path("metrics", metrics_view, name="metrics"),  # an admin's token or the metrics token
    path("favicon.ico", board_views.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("gastown_site.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # (split: its init script is a file of its own, so the Content-Security-Policy holds)
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]
