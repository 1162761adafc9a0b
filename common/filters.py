"""A list's query string, the same way on every list (the REST_FRAMEWORK filter backends):

- `KnownQueryParams`: a parameter the list does not take is a 400 naming it and what the list
  takes (a typo such as `?serch=` would otherwise be ignored in silence, and the whole table
  answered). A list takes: its filterset's filters, `search` and `ordering` where it offers them,
  its pagination's parameters (`limit`, `offset`; the event log: `after`, `limit`), `format`,
  and the parameters its view reads by hand, declared once in `view.list_params` (which also
  documents them in the OpenAPI schema).
- `Search`: `?search=words` where a view sets `search_fields` (every word must match one of
  them, case-insensitive).
- `Ordering`: `?ordering=field,-other` where a view sets `ordering_fields` (a list of names, or a
  dict from the name the API shows to the model's lookup); an unknown name is a 400 naming the
  allowed ones. Ties are broken by id, so pages do not overlap.
"""

from typing import Any

from django.db.models import F, QuerySet
from django_filters.rest_framework import DjangoFilterBackend, MultipleChoiceFilter
from rest_framework import filters
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.request import Request
from rest_framework.settings import api_settings

from common.params import foreign_digits

SEARCH_MAX = 200  # characters of `?search=` used (like the board's search box)


def list_param(name: str, description: str, type: str = "string", **schema: Any) -> dict:
    """An OpenAPI query parameter that a list view reads by hand (`view.list_params`)."""
    return {
        "name": name,
        "required": False,
        "in": "query",
        "description": description,
        "schema": {"type": type, **schema},
    }


def _is_detail(view) -> bool:
    """`get_object()` filters too: a request for one object is not a list."""
    lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", None)
    return bool(lookup) and lookup in getattr(view, "kwargs", {})


def _filterset(request: Request, queryset: QuerySet, view):
    """The list's django-filter filterset for this request, or None."""
    for backend_class in getattr(view, "filter_backends", []):
        backend = backend_class()
        if isinstance(backend, DjangoFilterBackend):
            return backend.get_filterset(request, queryset, view)
    return None


def list_params_taken(view, queryset: QuerySet | None = None) -> set[str]:
    """Every query parameter the list view takes (see the module's docstring)."""
    names = {api_settings.URL_FORMAT_OVERRIDE}
    paginator = getattr(view, "paginator", None)
    if paginator is not None:
        names |= {p["name"] for p in paginator.get_schema_operation_parameters(view)}
    for backend_class in getattr(view, "filter_backends", []):
        backend = backend_class()
        if isinstance(backend, DjangoFilterBackend):  # (it documents through drf-spectacular)
            filterset = backend.get_filterset_class(view, queryset)
            names |= set(filterset.base_filters) if filterset is not None else set()
        else:
            names |= {p["name"] for p in backend.get_schema_operation_parameters(view)}
    return names


class KnownQueryParams(filters.BaseFilterBackend):
    """Checks a list's whole query string before anything reads it, and names every problem in
    one 400: parameters the list does not take (naming what it takes), a parameter given twice,
    digits that are not ASCII, the filters' bad values, an unknown `ordering` field, a bad
    `search`, `limit` or `offset`. The backends after it then find nothing to refuse. It also
    documents `view.list_params`."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view) -> QuerySet:
        if _is_detail(view):
            return queryset
        taken = list_params_taken(view, queryset)
        params = request.query_params
        problems: dict[str, list[ErrorDetail]] = {}

        def problem(name: str, message: str, code: str = "invalid") -> None:
            problems.setdefault(name[:60], []).append(ErrorDetail(message, code=code))

        filterset = _filterset(request, queryset, view)
        many = {
            name
            for name, f in (filterset.filters.items() if filterset is not None else [])
            if isinstance(f, MultipleChoiceFilter)
        }
        unknown = [name for name in params if name not in taken]
        for name in unknown:
            problem(
                name,
                f"unknown query parameter '{name[:60]}'; this list takes: "
                f"{', '.join(sorted(taken))}.",
                "unknown_parameter",
            )
        for name in params:
            values = params.getlist(name)
            if name in unknown:
                continue
            if len(values) > 1 and name not in many:
                problem(name, f"'{name[:60]}' is given {len(values)} times; give it once.")
            elif name != "search" and any(foreign_digits(value) for value in values):
                problem(name, "digits in ASCII only (0-9).")
        if filterset is not None and not filterset.is_valid():
            for name, messages in filterset.errors.get_json_data().items():
                if name not in problems:
                    for message in messages:
                        problem(name, message["message"], message["code"] or "invalid")
        checks = [getattr(b, "check_params", None) for b in getattr(view, "filter_backends", [])]
        paginator = getattr(view, "paginator", None)
        checks.append(getattr(paginator, "check_params", None))
        told = set(problems)  # (a name already refused above is not checked again)
        for check in filter(None, checks):
            for name, message in check(request, view):
                if name not in told:
                    problem(name, message, "invalid_choice" if name == "ordering" else "invalid")
        if problems:
            raise ValidationError(problems)
        return queryset

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return list(getattr(view, "list_params", []))


def query_check(request: Request, queryset: QuerySet, view) -> None:
    """`KnownQueryParams`' check, for a view that reads parameters by hand in `get_queryset`
    (before the filter backends run): its own problems and these are then named together."""
    KnownQueryParams().filter_queryset(request, queryset, view)


def _names(fields) -> list[str]:
    """`search_fields` as people read them: `=legs__key` is `legs key`."""
    return [str(f).lstrip("^=@$").replace("__", " ") for f in fields]


class Search(filters.SearchFilter):
    """`?search=` on the views that set `search_fields`; documented only there."""

    @classmethod
    def check_params(cls, request: Request, view) -> list[tuple[str, str]]:
        """What `KnownQueryParams` reports (PostgreSQL refuses NUL in text: a 400, not a 500)."""
        if "\x00" in request.query_params.get(cls.search_param, ""):
            return [(cls.search_param, "null characters are not allowed.")]
        return []

    def get_search_terms(self, request: Request) -> list[str]:
        text = request.query_params.get(self.search_param, "")
        if self.check_params(request, None):
            raise ValidationError(dict(self.check_params(request, None)))
        return filters.search_smart_split(text[:SEARCH_MAX])

    def get_schema_operation_parameters(self, view) -> list[dict]:
        fields = getattr(view, "search_fields", None)
        if not fields:
            return []
        return [
            list_param(
                self.search_param,
                "words to look for (case-insensitive; each word must match one of: "
                f"{', '.join(_names(fields))})",
            )
        ]


class Ordering(filters.OrderingFilter):
    """`?ordering=` on the views that set `ordering_fields`; documented only there. Without it
    a list keeps its own order (newest first, most urgent first...)."""

    @staticmethod
    def fields(view) -> dict[str, str]:
        """The names the API takes, and the model lookup each sorts by."""
        fields = getattr(view, "ordering_fields", None) or {}
        return dict(fields) if isinstance(fields, dict) else {name: name for name in fields}

    @classmethod
    def check_params(cls, request: Request, view) -> list[tuple[str, str]]:
        """Each `ordering` name this list does not sort by (for `KnownQueryParams`)."""
        text = request.query_params.get(cls.ordering_param, "").strip()
        fields = cls.fields(view)
        if not text or not fields:
            return []
        return [
            (
                cls.ordering_param,
                f"'{name[:60]}' is not a field this list sorts by; it sorts by: "
                f"{', '.join(fields)} (a '-' first: descending).",
            )
            for name in (t.strip().removeprefix("-") for t in text.split(","))
            if name not in fields
        ]

    def get_ordering(self, request: Request, queryset: QuerySet, view) -> list | None:
        text = request.query_params.get(self.ordering_param, "").strip()
        fields = self.fields(view)
        if not text or not fields:
            return None
        wrong = self.check_params(request, view)
        if wrong:
            raise ValidationError(
                {self.ordering_param: [ErrorDetail(m, code="invalid_choice") for _, m in wrong]}
            )
        ordering = []
        for term in (t.strip() for t in text.split(",")):
            descending = term.startswith("-")
            name = term.removeprefix("-")
            # NULLs (not started, never finished) last either way, on SQLite and PostgreSQL
            expression = F(fields[name])
            ordering.append(
                expression.desc(nulls_last=True) if descending else expression.asc(nulls_last=True)
            )
        ordering.append("-pk" if text.split(",")[-1].strip().startswith("-") else "pk")
        return ordering

    def filter_queryset(self, request: Request, queryset: QuerySet, view) -> QuerySet:
        ordering = self.get_ordering(request, queryset, view)
        return queryset.order_by(*ordering) if ordering else queryset

    def get_schema_operation_parameters(self, view) -> list[dict]:
        fields = self.fields(view)
        if not fields:
            return []
        return [
            list_param(
                self.ordering_param,
                f"sort by these, comma-separated (a '-' first: descending): {', '.join(fields)}",
            )
        ]
