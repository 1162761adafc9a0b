"""The one parser for ids and small integers that arrive as text (query strings, form fields,
websocket frames, path segments): ASCII digits only (`str.isdigit()` also accepts '²', which
`int()` refuses), no thousands of digits (`int()` refuses past 4,300), nothing past the
database's 64-bit range. Bad text raises a ValidationError naming the field (a 400 in the API,
a message on the board, an error frame on the websocket)."""

from typing import Any

from django.core.exceptions import ValidationError

MAX_ID = 2**63 - 1
_MAX_DIGITS = len(str(MAX_ID))


def foreign_digits(text: str) -> bool:
    """Digits other than 0-9 (Arabic-Indic, superscripts): `int()` reads some; we take none."""
    return any(ch.isdigit() and not ch.isascii() for ch in text)


def id_or_none(value: Any) -> int | None:
    """`value` as an id (1..2^63-1), or None when it is not one. Never raises."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= MAX_ID else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


def parse_id(value: Any, field: str) -> int:
    """`value` as an id, or a ValidationError naming `field`."""
    number = id_or_none(value)
    if number is None:
        shown = str(value)[:40]
        raise ValidationError({field: f"'{shown}' is not an id (a positive integer)."})
    return number


def optional_id(params: Any, name: str) -> int | None:
    """`params[name]` (a QueryDict or a dict) as an id; None when absent or empty."""
    value = params.get(name, "")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_id(value, name)


def parse_count(value: Any, field: str, *, maximum: int) -> int:
    """A non-negative integer, clamped to `maximum` (limits, offsets, paces)."""
    text = str(value).strip()
    if not text or not (text.isascii() and text.isdigit()):
        raise ValidationError({field: f"'{text[:40]}' is not a non-negative integer."})
    if len(text) > _MAX_DIGITS:  # (never int() thousands of digits)
        return maximum
    return min(int(text), maximum)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def parse_flag(params: Any, name: str) -> bool:
    """`params[name]` as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`; absent or
    empty: False), or a ValidationError naming the field."""
    value = str(params.get(name, "") or "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValidationError({name: f"'{value[:40]}' is not a boolean; use true or false."})
    return value in _TRUE
