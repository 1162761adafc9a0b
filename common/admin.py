"""The admin's one way to run a service on selected objects: a `Refusal` (or bad input) becomes
a message on the page, never a 500."""

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError

from common.errors import Refusal, error_text


def run_service_action(
    modeladmin,
    request,
    queryset: Iterable[Any],
    action: Callable[[Any], Any],
    verb: str,
) -> None:
    """Apply a service to each selected object, reporting refusals instead of failing."""
    done = 0
    for obj in queryset:
        try:
            action(obj)
            done += 1
        except (Refusal, ValidationError, ValueError) as exc:
            modeladmin.message_user(request, f"{obj}: {error_text(exc)}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{verb} {done} item(s).", messages.SUCCESS)
