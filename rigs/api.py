"""Thin DRF views for repositories, rigs and merge requests."""

from rest_framework import generics

from rigs.models import Repository
from rigs.serializers import RepositorySerializer


class RepositoryListView(generics.ListAPIView):
    queryset = Repository.objects.order_by("name")
    serializer_class = RepositorySerializer
    filterset_fields = ["name", "target_branch"]


class RepositoryDetailView(generics.RetrieveAPIView):
    queryset = Repository.objects.all()
    serializer_class = RepositorySerializer
