"""Pages of the board (thin: selectors do the reading)."""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from convoys.models import Convoy, Event


@login_required
def board(request: HttpRequest) -> HttpResponse:
    convoys = Convoy.objects.select_related("repository").order_by("-updated_at")[:200]
    last_event_id = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    return render(
        request, "convoys/board.html", {"convoys": convoys, "last_event_id": last_event_id}
    )


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "database": connection.vendor})
