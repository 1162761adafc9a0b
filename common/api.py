"""API conventions shared by every endpoint: one error body `{"error": {"code", "message",
"field", "errors"}}`, bounded pagination. (What a list's query string may hold:
`common.filters`; the OpenAPI schema's tags and error examples: `common.schema`.)

Bad input lists every problem at once: `errors` holds each `{field, code, message}` (nested
fields by path, `legs[1].depends_on`), and `code`, `message`, `field` are the first one's.

Exceptions map to statuses here, so views stay thin:

| exception | status | code |
|---|---|---|
| `common.errors.Refusal` (every domain refusal subclasses it) | its `status` (409) | its `code` |
| ValidationError (DRF or Django) | 400 | the validator's code (`invalid`, `required`, ...) |
| IntegrityError (a racing insert) | 409 | `conflict` |
| ObjectDoesNotExist | 404 | `not_found` |
| OverflowError, DataError (numbers out of range) | 400 | `out_of_range` |
| OperationalError, InterfaceError (the database went away) | 503 | `database_unavailable` |

A 503 changed nothing: the transaction that failed was rolled back whole. Retry after a moment
(`Retry-After`).
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, pagination, serializers, status
from rest_framework.exceptions import ErrorDetail
from rest_framework.fields import get_error_detail
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import Refusal, error_body
from common.params import foreign_digits, parse_count

T = TypeVar("T")


def _all_errors(detail: Any, field: str | None = None) -> list[tuple[str | None, str, str]]:
    """Every message in DRF's nested error detail, in order, with the field it names
    (`legs[1].rig` for the second item of a list of objects) and its code."""
    if isinstance(detail, dict):
        found = []
        for key, value in detail.items():
            if isinstance(key, int):  # a ListField's item: `labels[0]`
                found += _all_errors(value, f"{field or ''}[{key}]")
                continue
            name = None if key in ("non_field_errors", "__all__") else str(key)
            found += _all_errors(value, f"{field}.{name}" if field and name else (name or field))
        return found
    if isinstance(detail, list):
        found = []
        for index, item in enumerate(detail):
            if isinstance(item, dict):  # a list of objects: name the item
                found += _all_errors(item, f"{field}[{index}]" if field else f"[{index}]")
            else:
                found += _all_errors(item, field)
        return found
    if detail is None:
        return []
    code = getattr(detail, "code", None) or "invalid"
    return [(field, str(code), str(detail))]


def _named(field: str | None, message: str) -> str:
    """The message, led by its field unless it already names it (`title: This field is
    required.`, but not `title is too long: ...` or `unknown query parameter 'serch'`)."""
    if not field:
        return message
    last = field.split(".")[-1].split("[")[0].lower()
    if message.lower().startswith(last) or f"'{field}'" in message:
        return message
    return f"{field}: {message}"


def error_response(
    code: str, message: str, http_status: int, field: str | None = None, headers=None
) -> Response:
    return Response(error_body(code, message, field), status=http_status, headers=headers)


class FieldErrors:
    """Bad input gathered field by field, for views that check more than a serializer does (ids
    looked up, query parameters read by hand): one 400 then names every problem, not the first.

        errors = FieldErrors()
        rig = errors.check(partial(optional_id, params, "rig"))  # None when it raised
        ...
        errors.raise_any()  # a 400 naming each bad field
    """

    def __init__(self) -> None:
        self.detail: dict[str, Any] = {}

    def check(self, call: Callable[[], T]) -> T | None:
        """`call()`, or None when it raised a ValidationError (kept for `raise_any`)."""
        try:
            return call()
        except (DjangoValidationError, exceptions.ValidationError) as exc:
            self.add(exc)
            return None

    def add(self, exc: DjangoValidationError | exceptions.ValidationError) -> None:
        if isinstance(exc, exceptions.ValidationError):
            detail = exc.detail
        else:
            detail = get_error_detail(exc)
        if not isinstance(detail, dict):
            detail = {"non_field_errors": detail}
        for name, value in detail.items():
            if isinstance(value, dict):  # nested (an object's fields): kept as it is
                self.detail.setdefault(name, value)
            else:
                kept = self.detail.setdefault(name, [])
                if isinstance(kept, list):
                    kept.extend(value if isinstance(value, list) else [value])

    def raise_any(self) -> None:
        if self.detail:
            raise exceptions.ValidationError(self.detail)


DATABASE_UNAVAILABLE = (
    "the database is unavailable (its connection was dropped); nothing was changed: retry in a "
    "moment."
)
RETRY_AFTER_SECONDS = 5


def _domain_error(exc: Exception) -> Response | None:
    """Exceptions of the domain (and of the database) that are not DRF's own."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return error_response(
            "database_unavailable",
            DATABASE_UNAVAILABLE,
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, Refusal):  # (its own body: a subclass may list more, like a plan's errors)
        return Response(exc.as_body(), status=exc.status)
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
    if isinstance(exc, DjangoValidationError):  # (with its codes: `required`, `max_length`...)
        exc = exceptions.ValidationError(get_error_detail(exc))
    elif isinstance(exc, Http404):  # (DRF converts these too, but we read `exc` below)
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = [
            {"field": field, "code": code, "message": _named(field, message)}
            for field, code, message in _all_errors(exc.detail)
        ] or [{"field": None, "code": "invalid", "message": "invalid input."}]
        first = errors[0]
        response.data = error_body(first["code"], first["message"], first["field"], errors)
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = error_body(str(code), str(detail))
    return response


# --- request bodies ------------------------------------------------------------------------------


class KnownFields:
    """A serializer mixin: a key the body's object does not take is a 400 naming it and what it
    takes (a typo such as `"priorty": 1` would otherwise be dropped in silence), named with the
    fields' own problems. Read-only fields count as known, so a body read and sent back works."""

    def to_internal_value(self, data):
        problems = {}
        if isinstance(data, Mapping):
            takes = sorted(name for name, field in self.fields.items())
            problems = {
                str(key)[:60]: [
                    ErrorDetail(
                        f"unknown field '{str(key)[:60]}'; this takes: {', '.join(takes)}.",
                        code="unknown_field",
                    )
                ]
                for key in data
                if key not in self.fields and key != "csrfmiddlewaretoken"
            }
            for name, field in self.fields.items():  # '١٢' is 12 to int(); not to the API
                value = data.get(name)
                if isinstance(field, _NUMBERS) and isinstance(value, str) and foreign_digits(value):
                    problems[name] = [ErrorDetail("digits in ASCII only (0-9).", code="invalid")]
        try:
            value = super().to_internal_value(data)
        except exceptions.ValidationError as exc:
            if problems and isinstance(exc.detail, dict):
                exc.detail.update(problems)
            raise
        if problems:
            raise exceptions.ValidationError(problems)
        return value


_NUMBERS = (
    serializers.IntegerField,
    serializers.DecimalField,
    serializers.FloatField,
    serializers.PrimaryKeyRelatedField,
)


class InputSerializer(KnownFields, serializers.Serializer):
    """A request body's shape (see `KnownFields`)."""


def body(serializer_class, request, *, errors: "FieldErrors | None" = None, **kwargs) -> dict:
    """The request body, validated by `serializer_class`.

    Without `errors`: a 400 naming every bad field. With `errors` (a view that looks ids up
    after the shape is checked): the bad fields' problems are added to `errors`, and the fields
    that are good on their own are returned, so the view can still look up the good ids and
    name every problem in one 400 (`errors.raise_any()` before anything is written)."""
    serializer = serializer_class(data=request.data, **kwargs)
    if serializer.is_valid():
        return dict(serializer.validated_data)
    if errors is None:
        raise exceptions.ValidationError(serializer.errors)
    errors.add(exceptions.ValidationError(serializer.errors))
    good = {}
    data = request.data if isinstance(request.data, Mapping) else {}
    for name, field in serializer.fields.items():
        if field.read_only or name in serializer.errors:
            continue
        try:
            good[name] = field.run_validation(field.get_value(data))
        except (exceptions.ValidationError, serializers.SkipField, DjangoValidationError):
            continue
    return good


# --- pagination ---------------------------------------------------------------------------------

MAX_OFFSET = 2**31 - 1


class Pagination(pagination.LimitOffsetPagination):
    """`?limit=&offset=` on every list: at most 200 a page (more is clamped), and an offset past
    any real table is clamped (a huge offset would overflow the database's LIMIT/OFFSET). A
    value that is not a number is a 400 naming it, not the default page in silence."""

    default_limit = 50
    max_limit = 200

    def check_params(self, request, view=None) -> list[tuple[str, str]]:
        """The bad `limit`/`offset` (for `common.filters.KnownQueryParams`)."""
        problems = []
        for name, lowest in ((self.limit_query_param, 1), (self.offset_query_param, 0)):
            text = request.query_params.get(name)
            if text is None:
                continue
            try:
                value = parse_count(text, name, maximum=MAX_OFFSET)
            except DjangoValidationError:
                value = -1
            if value < lowest:
                kind = "a positive" if lowest else "a non-negative"
                problems.append((name, f"'{text[:40]}' is not {kind} integer."))
        return problems

    def _count(self, request, name: str, default: int | None, maximum: int) -> int | None:
        if request.query_params.get(name) is None:
            return default
        problems = [m for n, m in self.check_params(request) if n == name]
        if problems:
            raise exceptions.ValidationError({name: problems})
        return parse_count(request.query_params[name], name, maximum=maximum)

    def get_limit(self, request) -> int | None:
        return self._count(request, self.limit_query_param, self.default_limit, self.max_limit)

    def get_offset(self, request) -> int:
        return self._count(request, self.offset_query_param, 0, MAX_OFFSET)
