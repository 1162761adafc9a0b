"""Reads of the event log."""

from django.db.models import Q, QuerySet

from common.params import id_or_none
from events.models import Event
from events.services import BOARD_GROUP

REPLAY_LIMIT = 1000
GROUP_KINDS = ("convoy", "rig", "repository")


def events_after(*, after: int, groups: list[str], limit: int = REPLAY_LIMIT) -> QuerySet[Event]:
    """Events newer than `after` that belong to any of `groups` (for replay on reconnect)."""
    qs = Event.objects.filter(id__gt=after).order_by("id")
    if BOARD_GROUP not in groups:
        condition = Q(pk__in=[])
        for group in groups:
            kind, _, ident = group.partition(".")
            number = id_or_none(ident)
            if number is not None and kind in GROUP_KINDS:
                condition |= Q(**{f"{kind}_id": number})
        qs = qs.filter(condition)
    return qs[:limit]


def last_event_id() -> int:
    """The newest event's id (a page rendered now has seen everything up to it)."""
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
