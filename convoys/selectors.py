"""Reads for convoys, beads, notifications and events: query-count bounded."""

from django.db.models import Q, QuerySet

from convoys.models import Event

REPLAY_LIMIT = 1000


def events_after(*, after: int, groups: list[str], limit: int = REPLAY_LIMIT) -> QuerySet[Event]:
    """Events newer than `after` that belong to any of `groups` (for replay on reconnect)."""
    qs = Event.objects.filter(id__gt=after).order_by("id")
    if "board" not in groups:
        condition = Q(pk__in=[])
        for group in groups:
            kind, _, ident = group.partition(".")
            if ident.isdigit() and kind in ("convoy", "rig", "repository"):
                condition |= Q(**{f"{kind}_id": int(ident)})
        qs = qs.filter(condition)
    return qs[:limit]
