from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from convoys import views as convoy_views

urlpatterns = [
    path("", convoy_views.board, name="board"),
    path("healthz", convoy_views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("gastown_site.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
