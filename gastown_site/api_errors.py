"""One error body for the whole API: {"error": {"code", "message", "field"}}."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from rigs.statemachine import IllegalTransition, StaleState


def _first_error(detail: Any, field: str | None = None) -> tuple[str | None, str, str]:
    """Walk DRF's nested error detail down to the first message and the field it names."""
    if isinstance(detail, dict):
        key, value = next(iter(detail.items()))
        name = None if key in ("non_field_errors", "__all__") else str(key)
        return _first_error(value, f"{field}.{name}" if field and name else (name or field))
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], field)
    code = getattr(detail, "code", None) or "invalid"
    return field, str(code), str(detail)


def error_response(code: str, message: str, http_status: int, field: str | None = None):
    return Response(
        {"error": {"code": code, "message": message, "field": field}}, status=http_status
    )


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, IllegalTransition):
        return error_response("illegal_transition", str(exc), status.HTTP_409_CONFLICT, "state")
    if isinstance(exc, StaleState):
        return error_response("conflict", str(exc), status.HTTP_409_CONFLICT, "state")
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        field, code, message = _first_error(exc.detail)
        if field and not message.lower().startswith(field.split(".")[-1].lower()):
            message = f"{field}: {message}"
        response.data = {"error": {"code": code, "message": message, "field": field}}
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = {"error": {"code": str(code), "message": str(detail), "field": None}}
    return response
