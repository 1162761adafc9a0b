"""The one way a stateful model changes state.

Each model declares `TRANSITIONS = {from_state: {allowed to_states}}` next to its `State`
choices (and `STATE_FIELD` when the field is not called `state`). `transition()` applies a move
as a compare-and-swap `UPDATE ... WHERE state = <from>`, so two workers racing on one row cannot
both win, and an illegal move raises a clear error.
"""

from collections.abc import Mapping
from typing import Any

from django.db import models
from django.utils import timezone

from common.errors import Refusal


class IllegalTransition(Refusal):
    """The state machine does not allow this move."""

    code = "illegal_transition"
    field = "state"


class StaleState(Refusal):
    """Someone else changed the state first (the compare-and-swap found another state)."""

    code = "conflict"
    field = "state"


def state_field(model: type[models.Model]) -> str:
    return getattr(model, "STATE_FIELD", "state")


def check_transition(model: type[models.Model], current: str, target: str) -> None:
    table: Mapping[str, set[str]] = model.TRANSITIONS
    if target not in table.get(current, set()):
        allowed = ", ".join(sorted(table.get(current, set()))) or "none (final state)"
        raise IllegalTransition(
            f"{model._meta.verbose_name} cannot go from '{current}' to '{target}'; "
            f"allowed from '{current}': {allowed}."
        )


def transition(obj: models.Model, target: str, **fields: Any) -> models.Model:
    """Move `obj` to `target` (plus any other `fields`) if the table allows it.

    Raises IllegalTransition for a move the table forbids and StaleState when the row's state in
    the database is no longer the one `obj` holds. On success `obj` is updated in place.
    """
    model = type(obj)
    field = state_field(model)
    current = getattr(obj, field)
    check_transition(model, current, target)
    values = {field: target, **fields}
    if any(f.name == "updated_at" for f in model._meta.concrete_fields):
        values.setdefault("updated_at", timezone.now())
    updated = model._default_manager.filter(pk=obj.pk, **{field: current}).update(**values)
    if updated != 1:
        actual = model._default_manager.filter(pk=obj.pk).values_list(field, flat=True).first()
        raise StaleState(
            f"{model._meta.verbose_name} {obj.pk} is '{actual}', not '{current}': "
            "it changed meanwhile; reload and retry."
        )
    for name, value in values.items():
        setattr(obj, name, value)
    return obj
