"""`Refusal`: the one type of a domain's "no". Services raise a subclass (or `Refusal` itself)
with a machine-readable code, a message for people, the input field it is about and the HTTP
status it means; the API's exception handler, the board's action helper and the admin's action
helper each catch `Refusal` and show it their way, so a new refusal needs no mapping anywhere.

Bad input that a form or serializer can name field by field stays a Django/DRF
`ValidationError` (400); a `Refusal` is a well-formed request the current state refuses (409 by
default)."""

from typing import ClassVar

from django.core.exceptions import ValidationError


class Refusal(Exception):
    """A request the domain refuses: `code`, `message`, `field`, `status`."""

    code: ClassVar[str] = "refused"
    field: ClassVar[str | None] = None
    status: ClassVar[int] = 409

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # instance values shadow the class defaults
        if code is not None:
            self.code = code
        if field is not None:
            self.field = field
        if status is not None:
            self.status = status

    def as_body(self) -> dict:
        return error_body(self.code, self.message, self.field)


def error_body(
    code: str, message: str, field: str | None = None, errors: list[dict] | None = None
) -> dict:
    """The one error body: the first problem's `code`, `message` and `field`, and `errors`,
    every problem (`{field, code, message}`, the first included), so a client that reads one
    shape sees all of them at once."""
    first = {"field": field, "code": code, "message": message}
    return {"error": {**first, "errors": errors if errors else [first]}}


def error_text(exc: Exception) -> str:
    """One line for people, for a Refusal or a Django ValidationError (board and admin)."""
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(
                f"{name}: {' '.join(msgs)}" if name != "__all__" else " ".join(msgs)
                for name, msgs in exc.message_dict.items()
            )
        return " ".join(exc.messages)
    return str(exc)
