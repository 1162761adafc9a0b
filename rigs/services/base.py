"""Helpers every rigs service shares: validation, events, refusals."""

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError

from common.errors import Refusal
from events.services import event_append
from rigs.models import MergeRequest, Rig


class TeardownRefused(Refusal):
    """Tearing down would lose work (unmerged commits or uncommitted changes)."""

    code = "lost_work"
    field = "force"


def _full_clean(obj, **kwargs) -> None:
    """Model validation, re-raised with field names intact (the API turns it into a 400)."""
    obj.full_clean(**kwargs)


def _validate_field(field: str, validator, value) -> None:
    """Run a standalone validator so that its error names the field it is about."""
    try:
        validator(value)
    except ValidationError as exc:
        raise ValidationError({field: exc.messages}) from exc


def _rig_event(kind: str, rig: Rig, payload: dict[str, Any]) -> None:
    event_append(kind, payload, repository_id=rig.repository_id, rig_id=rig.id)


def _rig_state_event(rig: Rig, old_state: str, new_state: str, reason: str) -> None:
    _rig_event(
        "rig.state",
        rig,
        {
            "rig": rig.id,
            "slug": rig.slug,
            "from": old_state,
            "to": new_state,
            "reason": reason,
            "progress": rig.progress,
            "label": rig.progress_label,
        },
    )


def _merge_request_state_event(
    merge_request: MergeRequest, old_state: str, new_state: str, **extra: Any
) -> None:
    event_append(
        "merge_request.state",
        {"merge_request": merge_request.id, "from": old_state, "to": new_state, **extra},
        repository_id=merge_request.repository_id,
        rig_id=merge_request.rig_id,
    )


def _changes(obj, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields whose value differs from the object's (a re-save of the same values is no
    change and appends no event)."""
    return {name: value for name, value in fields.items() if getattr(obj, name) != value}


def _refuse_unknown(fields: dict[str, Any], allowed: Iterable[str], what: str) -> None:
    extra = sorted(set(fields) - set(allowed))
    if extra:
        raise ValidationError({extra[0]: f"'{extra[0]}' cannot change after the {what} exists."})


# --- repositories -----------------------------------------------------------------------------
