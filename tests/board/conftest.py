"""Fixtures for the board's tests: people with roles, logged-in clients; the `browser` marker."""

import pytest
from django.contrib.auth.models import Group

from rigs.permissions import OPERATOR_GROUP, VIEWER_GROUP


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "browser: drives Debian's Chromium with Playwright against the real ASGI server "
        "(skipped when /usr/bin/chromium is missing)",
    )


PASSWORD = "pw-board-123456"


@pytest.fixture
def operator(django_user_model):
    user = django_user_model.objects.create_user("olive", password=PASSWORD)
    group, _ = Group.objects.get_or_create(name=OPERATOR_GROUP)
    user.groups.add(group)
    return user


@pytest.fixture
def viewer(django_user_model):
    user = django_user_model.objects.create_user("victor", password=PASSWORD)
    group, _ = Group.objects.get_or_create(name=VIEWER_GROUP)
    user.groups.add(group)
    return user


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def chromium(asgi_server, monkeypatch):
    """Chromium against the test's ASGI server (a module may define its own)."""
    from tests.board.browser import chromium_launched

    with chromium_launched(monkeypatch) as browser:
        yield browser
