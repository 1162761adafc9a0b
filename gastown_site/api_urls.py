"""/api/v1/: the agents' API. Each app contributes its routes."""

from django.urls import path

from rigs import api as rigs_api

urlpatterns = [
    path("repositories/", rigs_api.RepositoryListView.as_view(), name="repository-list"),
    path(
        "repositories/<int:pk>/", rigs_api.RepositoryDetailView.as_view(), name="repository-detail"
    ),
]
