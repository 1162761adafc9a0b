"""API conventions shared by every endpoint: one error body `{"error": {"code", "message",
"field"}}` (and its place in the OpenAPI schema), bounded pagination.

Exceptions map to statuses here, so views stay thin:

| exception | status | code |
|---|---|---|
| `common.errors.Refusal` (every domain refusal subclasses it) | its `status` (409) | its `code` |
| ValidationError (DRF or Django) | 400 | the validator's code (`invalid`, `required`, ...) |
| IntegrityError (a racing insert) | 409 | `conflict` |
| ObjectDoesNotExist | 404 | `not_found` |
| OverflowError, DataError (numbers out of range) | 400 | `out_of_range` |
"""

from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import Http404
from rest_framework import exceptions, pagination, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import Refusal


def _first_error(detail: Any, field: str | None = None) -> tuple[str | None, str, str]:
    """Walk DRF's nested error detail down to the first message and the field it names
    (`legs[1].rig` for the second item of a list of objects)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if value in ({}, [], None):
                continue
            name = None if key in ("non_field_errors", "__all__") else str(key)
            return _first_error(value, f"{field}.{name}" if field and name else (name or field))
    if isinstance(detail, list):
        for index, item in enumerate(detail):
            if item in ({}, [], None):
                continue
            if isinstance(item, dict):  # a list of objects: name the item
                return _first_error(item, f"{field}[{index}]" if field else f"[{index}]")
            return _first_error(item, field)
    code = getattr(detail, "code", None) or "invalid"
    return field, str(code), str(detail)


def error_response(
    code: str, message: str, http_status: int, field: str | None = None, headers=None
) -> Response:
    return Response(
        {"error": {"code": code, "message": message, "field": field}},
        status=http_status,
        headers=headers,
    )


def _domain_error(exc: Exception) -> Response | None:
    """Exceptions of the domain (and of the database) that are not DRF's own."""
    if isinstance(exc, Refusal):
        return error_response(exc.code, exc.message, exc.status, exc.field)
    if isinstance(exc, RequestDataTooBig):
        return error_response(
            "too_large",
            f"the request body is larger than {settings.GASTOWN_MAX_BODY_BYTES} bytes "
            "(GASTOWN_MAX_BODY_BYTES).",
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, IntegrityError):
        return error_response(
            "conflict",
            "the change conflicts with another one made meanwhile; retry.",
            status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, (OverflowError, DataError)):
        return error_response(
            "out_of_range", "a value is out of range.", status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, ObjectDoesNotExist):
        return error_response("not_found", str(exc) or "Not found.", status.HTTP_404_NOT_FOUND)
    return None


def exception_handler(exc: Exception, context: dict) -> Response | None:
    response = _domain_error(exc)
    if response is not None:
        return response
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    elif isinstance(exc, Http404):  # (DRF converts these too, but we read `exc` below)
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        field, code, message = _first_error(exc.detail)
        last = (field or "").split(".")[-1].split("[")[0].lower()
        if field and not message.lower().startswith(last):
            message = f"{field}: {message}"
        response.data = {"error": {"code": code, "message": message, "field": field}}
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = {"error": {"code": str(code), "message": str(detail), "field": None}}
    return response


# --- pagination ---------------------------------------------------------------------------------

MAX_OFFSET = 2**31 - 1


class Pagination(pagination.LimitOffsetPagination):
    """`?limit=&offset=` on every list: at most 200 a page, and an offset past any real table is
    clamped (a huge offset would overflow the database's LIMIT/OFFSET)."""

    default_limit = 50
    max_limit = 200

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), MAX_OFFSET)


# --- OpenAPI --------------------------------------------------------------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "machine-readable, e.g. `not_found`"},
                "message": {"type": "string", "description": "for people: what and why"},
                "field": {
                    "type": "string",
                    "nullable": True,
                    "description": "the input field the error is about (`legs[1].rig`)",
                },
            },
            "required": ["code", "message", "field"],
        }
    },
    "required": ["error"],
}

_ERRORS = {
    "400": "Bad input: the field and the rule are named.",
    "401": "No credentials, or an invalid, revoked or expired token.",
    "403": "Authenticated, but not allowed (wrong agent, or a role that may not do this).",
    "404": "No such object.",
    "409": "Conflicts with the current state (already claimed, illegal transition, cycle...).",
    "415": "The body is not JSON (or form data).",
    "429": "Too many requests for this token; retry after `Retry-After` seconds.",
}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: every operation documents the error body for the statuses it can
    answer with (409 and 415 only where a request can change something)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            public_op = operation.get("security") == [{}] or {} in operation.get("security", [])
            for code, description in _ERRORS.items():
                if code in ("409", "415") and method in ("get", "head"):
                    continue
                if code in ("401", "403") and public_op and method in ("get", "head"):
                    continue
                operation["responses"].setdefault(
                    code,
                    {"description": description, "content": {"application/json": {"schema": ref}}},
                )
    return result
