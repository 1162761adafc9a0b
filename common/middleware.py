"""Request-level middleware: the log context and metrics of each request, and the guards that
run before any view reads the request."""

import re
import time
import uuid

from django.conf import settings
from django.core.signals import request_finished
from django.db import InterfaceError, OperationalError
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse

from common import metrics
from common.api import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS
from common.errors import error_body
from common.logs import log_context_clear, log_context_set

REQUEST_ID_HEADER = "X-Request-ID"
# An id a proxy sent is kept when it looks like one (it then joins the proxy's logs to ours).
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# URL names whose `pk` is a rig's or a convoy's id (API `rig-detail`, board `rig-live`, ...).
CONTEXT_URL_PREFIXES = {"rig-": "rig", "convoy-": "convoy"}


class RequestContextMiddleware:
    """Gives each request an id (the proxy's X-Request-ID when it sent a sane one), puts it, and
    the rig or convoy the URL names, in the log context, and answers it in X-Request-ID.

    The context is not reset when the response leaves the middleware: Django logs 4xx answers
    after that (`django.request`), and they should carry the id too. Under ASGI each request
    runs in a context of its own; `request_finished` clears it for the test client."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sent = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = sent if REQUEST_ID_RE.match(sent) else uuid.uuid4().hex
        log_context_clear()
        log_context_set(request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> None:
        url_name = request.resolver_match.url_name if request.resolver_match else None
        pk = view_kwargs.get("pk")
        for prefix, key in CONTEXT_URL_PREFIXES.items():
            if url_name and pk is not None and url_name.startswith(prefix):
                log_context_set(**{key: pk})


@receiver(request_finished)
def _request_context_clear(sender, **kwargs) -> None:
    log_context_clear()


class RequestMetricsMiddleware:
    """Counts each request by view (its URL name; `unmatched` when none matched) and status,
    and times it."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        response = self.get_response(request)
        match = request.resolver_match
        metrics.http_request_observe(
            view=match.view_name if match else "unmatched",
            method=request.method or "",
            status=response.status_code,
            seconds=time.monotonic() - started,
        )
        return response


def body_too_large(limit: int) -> JsonResponse:
    message = f"the request body is larger than {limit} bytes (GASTOWN_MAX_BODY_BYTES)."
    return JsonResponse(error_body("too_large", message), status=413)


class BodySizeLimitMiddleware:
    """A request whose declared body is larger than GASTOWN_MAX_BODY_BYTES gets 413 with the
    API's error body, unread. (A body sent without Content-Length is capped by Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE, set to the same limit, when it is read: also a 413.)"""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.GASTOWN_MAX_BODY_BYTES
        declared = request.META.get("CONTENT_LENGTH") or ""
        if (
            declared in ("", "0")
            and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            # (Django reads a body by its Content-Length: a chunked one would be read as empty)
            message = "a chunked body is not read: send it with a Content-Length."
            return JsonResponse(error_body("length_required", message), status=411)
        if declared:
            if not (declared.isascii() and declared.isdigit()):
                return JsonResponse(
                    error_body("invalid", "Content-Length is not a number."), status=400
                )
            if len(declared) > 18 or int(declared) > limit:
                return body_too_large(limit)
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """A page whose database connection was dropped (PostgreSQL restarted, a connection
    terminated) answers 503 with the API's error body and Retry-After, not a 500: its
    transaction was rolled back whole, so retrying is safe. (The API's own views get the same
    from `common.api.exception_handler`.)"""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        response = JsonResponse(
            error_body("database_unavailable", DATABASE_UNAVAILABLE), status=503
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
