"""Request-level guards that run before any view reads the request."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from common.errors import error_body


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
        if declared:
            if not (declared.isascii() and declared.isdigit()):
                return JsonResponse(
                    error_body("invalid", "Content-Length is not a number."), status=400
                )
            if len(declared) > 18 or int(declared) > limit:
                return body_too_large(limit)
        return self.get_response(request)
