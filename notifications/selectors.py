"""Reads of rigs' notices."""

from collections.abc import Iterable

from notifications.models import Notification


def notices_open(
    *, rig_ids: Iterable[int], topics: Iterable[str], lock: bool = False
) -> dict[int, dict[str, Notification]]:
    """The open notices of these rigs on these topics: {rig id: {topic: notice}} (one query).
    `lock` takes their rows for the caller's transaction (it is about to update them)."""
    qs = Notification.objects.filter(
        rig_id__in=list(rig_ids), topic__in=list(topics), state=Notification.State.OPEN
    ).order_by("id")
    if lock:
        qs = qs.select_for_update(of=("self",))
    found: dict[int, dict[str, Notification]] = {}
    for notice in qs:
        found.setdefault(notice.rig_id, {})[notice.topic] = notice
    return found
