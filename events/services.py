"""The event log: appended in the same transaction as the change, broadcast after commit."""

import logging
from pathlib import Path
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from events.kinds import kind_check
from events.models import Event

logger = logging.getLogger(__name__)

BOARD_GROUP = "board"


def convoy_group(convoy_id: int) -> str:
    return f"convoy.{convoy_id}"


def rig_group(rig_id: int) -> str:
    return f"rig.{rig_id}"


def repository_group(repository_id: int) -> str:
    return f"repository.{repository_id}"


def event_as_message(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "kind": event.kind,
        "payload": event.payload,
        "repository": event.repository_id,
        "convoy": event.convoy_id,
        "rig": event.rig_id,
        "created_at": event.created_at.isoformat(),
    }


def event_groups(event: Event) -> list[str]:
    groups = [BOARD_GROUP]
    if event.convoy_id:
        groups.append(convoy_group(event.convoy_id))
    if event.rig_id:
        groups.append(rig_group(event.rig_id))
    if event.repository_id:
        groups.append(repository_group(event.repository_id))
    return groups


def events_broadcast(events: list[Event]) -> None:
    """Push events to their channel groups: one message per group carrying that group's events
    in order, sent one after another over one connection (a cascade of 100 notifications is
    about a hundred small sends, not hundreds of concurrent connections). A failure here loses
    nothing: the rows are stored and clients replay them on reconnect."""
    layer = get_channel_layer()
    if layer is None or not events:
        return
    if not settings.REDIS_URL and not Path(settings.EMBEDDED_REDIS_SOCKET).exists():
        # The embedded Redis lives with `make run`: a `manage.py` command run while the server
        # is stopped has nobody to tell (pages and agents replay the rows when they connect).
        logger.debug("no embedded Redis running: events %s not broadcast", [e.id for e in events])
        return
    by_group: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        message = event_as_message(event)
        for group in event_groups(event):
            by_group.setdefault(group, []).append(message)

    async def send_all() -> None:
        for group, batch in by_group.items():
            await layer.group_send(group, {"type": "event.batch", "events": batch})

    try:
        async_to_sync(send_all)()
    except Exception:
        logger.warning("could not broadcast events %s", [e.id for e in events], exc_info=True)


class _CommitBatch:
    """The events of one transaction, broadcast together once it commits."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def flush(self) -> None:
        # Events appended inside a savepoint that rolled back are gone: send only stored ones.
        # (SQLite may reuse a rolled-back id; the later event with that id is the stored one.)
        latest = {e.id: e for e in self.events}
        stored = set(Event.objects.filter(id__in=latest).values_list("id", flat=True))
        events_broadcast([e for e in latest.values() if e.id in stored])


def event_append(
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    repository_id: int | None = None,
    convoy_id: int | None = None,
    rig_id: int | None = None,
) -> Event:
    """Append an event in the current transaction; it is broadcast once that commits (all of a
    transaction's events in one batch: a cascade of 100 notifications is one round trip)."""
    kind_check(kind)
    event = Event.objects.create(
        kind=kind,
        payload=payload or {},
        repository_id=repository_id,
        convoy_id=convoy_id,
        rig_id=rig_id,
    )
    _broadcast_after_commit([event])
    return event


def events_append_many(events: list[Event]) -> list[Event]:
    """`event_append` for many unsaved Event objects at once (one INSERT)."""
    for event in events:
        kind_check(event.kind)
    if events:
        Event.objects.bulk_create(events)
        _broadcast_after_commit(events)
    return events


def _broadcast_after_commit(events: list[Event]) -> None:
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        events_broadcast(events)
        return
    batch = getattr(connection, "_gastown_event_batch", None)
    registered = batch is not None and any(
        hook[1] == batch.flush for hook in connection.run_on_commit
    )
    if not registered:
        batch = _CommitBatch()
        connection._gastown_event_batch = batch
        transaction.on_commit(batch.flush)
    batch.events.extend(events)
