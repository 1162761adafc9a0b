"""Clients for each kind of caller: agents (token), people by role (session), anonymous."""

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from rigs import services
from rigs.models import Agent

ERROR_KEYS = {"code", "message", "field", "errors"}


def error_of(response) -> dict:
    """The error body, checked for its one shape: the first problem, and `errors` listing every
    problem with the first one first."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    error = body["error"]
    first = {key: error[key] for key in ("field", "code", "message")}
    assert error["errors"] and error["errors"][0] == first, body
    return error


@pytest.fixture
def make_agent(db) -> Callable[..., tuple[Agent, APIClient]]:
    def make(name: str = "claude-1", **kwargs) -> tuple[Agent, APIClient]:
        agent, token = services.agent_create(name=name, **kwargs)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        client.token = token
        return agent, client

    return make


@pytest.fixture
def make_person(db, django_user_model) -> Callable[..., APIClient]:
    def make(username: str, role: str | None = None, **kwargs) -> APIClient:
        user = django_user_model.objects.create_user(username, password="pw-123456789", **kwargs)
        if role:
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        client = APIClient()
        client.force_login(user)
        client.user = user
        return client

    return make


@pytest.fixture
def operator(make_person) -> APIClient:
    return make_person("op", "operator")


@pytest.fixture
def viewer(make_person) -> APIClient:
    return make_person("viewer", "viewer")


@pytest.fixture
def nobody(make_person) -> APIClient:
    """Logged in, but with no role."""
    return make_person("nobody")


@pytest.fixture
def anon() -> APIClient:
    return APIClient()
