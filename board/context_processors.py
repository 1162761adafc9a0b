"""What every board page's header shows: the count of open questions to a person (escalations,
ended turns), read only when a template shows it, and only for people with a role."""

from typing import Any

from django.http import HttpRequest

from board import pages
from rigs.permissions import is_viewer


def escalations(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not is_viewer(user):
        return {}
    cached: list[int] = []

    def count() -> int:  # templates call it; one query per response at most
        if not cached:
            cached.append(pages.escalations_count())
        return cached[0]

    return {"open_escalations": count}
