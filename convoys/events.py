"""The event log: appended in the same transaction as the change, broadcast after commit."""

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from convoys.models import Event

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


def event_broadcast(event: Event) -> None:
    """Push one event to its channel groups. A failure here loses nothing: the row is stored and
    clients replay it on reconnect."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "event.message", "event": event_as_message(event)}
    try:
        for group in event_groups(event):
            async_to_sync(layer.group_send)(group, message)
    except Exception:
        logger.warning("could not broadcast event %s", event.id, exc_info=True)


def event_append(
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    repository_id: int | None = None,
    convoy_id: int | None = None,
    rig_id: int | None = None,
) -> Event:
    """Append an event in the current transaction; it is broadcast once that commits."""
    event = Event.objects.create(
        kind=kind,
        payload=payload or {},
        repository_id=repository_id,
        convoy_id=convoy_id,
        rig_id=rig_id,
    )
    transaction.on_commit(lambda: event_broadcast(event))
    return event
