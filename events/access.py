"""Who may read which events: asked of the policy that settings.GASTOWN_EVENT_ACCESS names
(a module path), because roles, agents and rigs live in apps above this one.

The policy module provides:
- `events_visible(user, queryset) -> queryset`: the events `user` may read;
- `groups_allowed(user, groups) -> list[str] | None`: the websocket groups `user` may join (None:
  may not connect at all);
- `event_for(user, message) -> dict | None`: one broadcast event as `user` may see it (None: not
  at all), for live messages that reached a group the user joined.
"""

from functools import cache
from types import ModuleType
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils.module_loading import import_module


@cache
def _policy() -> ModuleType:
    return import_module(settings.GASTOWN_EVENT_ACCESS)


def events_visible(user: Any, queryset: QuerySet) -> QuerySet:
    return _policy().events_visible(user, queryset)


def groups_allowed(user: Any, groups: list[str]) -> list[str] | None:
    return _policy().groups_allowed(user, groups)


def event_for(user: Any, message: dict) -> dict | None:
    return _policy().event_for(user, message)
