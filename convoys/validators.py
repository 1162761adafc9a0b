"""Validation of a leg's acceptance checklist (the model, the API and the plan import share it)."""

from django.core.exceptions import ValidationError

ACCEPTANCE_MAX_ITEMS = 30
ACCEPTANCE_ITEM_MAX = 300


def validate_acceptance(value) -> None:
    """A checklist: at most 30 items, each one line of 1-300 characters."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(
            "must be a list of short texts (a checklist).", code="invalid_acceptance"
        )
    if len(value) > ACCEPTANCE_MAX_ITEMS:
        raise ValidationError(
            f"at most {ACCEPTANCE_MAX_ITEMS} acceptance items ({len(value)} given).",
            code="invalid_acceptance",
        )
    for item in value:
        if not item.strip():
            raise ValidationError("an acceptance item cannot be empty.", code="invalid_acceptance")
        if len(item) > ACCEPTANCE_ITEM_MAX:
            raise ValidationError(
                f"an acceptance item is at most {ACCEPTANCE_ITEM_MAX} characters "
                f"('{item[:40]}…' has {len(item)}).",
                code="invalid_acceptance",
            )
        if any(ch in item for ch in "\n\r\0"):
            raise ValidationError(
                f"an acceptance item is one line ('{item[:40]!r}').", code="invalid_acceptance"
            )
