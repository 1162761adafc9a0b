"""/api/v1/: the agents' API. Each app contributes its routes."""

from django.urls import path

from convoys import api as convoys_api
from rigs import api as rigs_api

urlpatterns = [
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
    path("beads/", convoys_api.BeadListView.as_view(), name="bead-list"),
]
