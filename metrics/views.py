"""`GET /metrics`: the Prometheus exposition, for an admin's API token or the metrics token.

- `Authorization: Bearer <GASTOWN_METRICS_TOKEN>`: what a scraper sends (Prometheus'
  `authorization: {credentials: ...}`); the token reads /metrics and nothing else.
- `Authorization: Token gtp_…`: the personal API token of an admin (staff or superuser).

Anything else is 401 (no or a wrong credential) or 403 (a valid token of someone who is not an
admin: an operator, a viewer, an agent). Wrong credentials count towards the same per-address
limit as the API's failed token checks.
"""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from common.metrics import shared_between_processes
from metrics.collectors import DatabaseCollector
from rigs.auth import principal_for_token, token_failure_record, token_failures_wait


def _refusal(status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse(
        {"error": {"code": code, "message": message, "field": None}}, status=status
    )
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="gastown metrics"'
    return response


def metrics_refusal(request: HttpRequest) -> JsonResponse | None:
    """None when the request may read the metrics, else the answer that says why not."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme not in ("bearer", "token") or not credentials:
        return _refusal(
            401,
            "not_authenticated",
            "send the metrics token (Authorization: Bearer …) or an admin's API token "
            "(Authorization: Token gtp_…).",
        )
    address = request.META.get("REMOTE_ADDR", "")
    if token_failures_wait(address) is not None:
        return _refusal(429, "throttled", "too many failed token checks from this address.")
    if scheme == "bearer":
        expected = settings.GASTOWN_METRICS_TOKEN
        if expected and hmac.compare_digest(credentials.encode(), expected.encode()):
            return None
        token_failure_record(address)
        if not expected:
            return _refusal(
                401,
                "authentication_failed",
                "no metrics token is configured (GASTOWN_METRICS_TOKEN): use an admin's API token.",
            )
        return _refusal(401, "authentication_failed", "wrong metrics token.")
    principal = principal_for_token(credentials)
    if principal is None:
        token_failure_record(address)
        return _refusal(401, "authentication_failed", "invalid, revoked or expired token.")
    user = principal[0]
    if not (user.is_staff or user.is_superuser):
        return _refusal(403, "permission_denied", "only admins (and the metrics token) may.")
    return None


class _InProcess:
    """This process's own instruments (no multiprocess directory)."""

    def collect(self):
        return REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    """What a scrape shows: the instruments of every process of this host (or of this one),
    and what the database says now."""
    registry = CollectorRegistry()
    if shared_between_processes():
        MultiProcessCollector(registry)
    else:
        registry.register(_InProcess())
    registry.register(DatabaseCollector())
    return registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    # the text format, or OpenMetrics when the scraper asks for it (Prometheus does)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(metrics_registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
