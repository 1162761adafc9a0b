"""Prometheus instruments recorded in-process: requests, websocket clients, Celery tasks.

State (queue depth, live runs, open notices, spend) and the durations already stored on rows
(gates, provisions) are read from the database at scrape time instead (`metrics/`), so they are
right whichever process is scraped. These counters live in the process that counts; with
GASTOWN_METRICS_DIR (the default) prometheus_client's multiprocess mode shares them between the
processes of one host through files, and the web process's /metrics shows them all.
"""

import atexit
import contextlib
import os
import time
from datetime import datetime
from typing import Any

from django.conf import settings

# Loading the settings first sets PROMETHEUS_MULTIPROC_DIR, which prometheus_client reads when it
# is imported.
METRICS_DIR = settings.GASTOWN_METRICS_DIR
from prometheus_client import Counter, Gauge, Histogram, multiprocess, values  # noqa: E402

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "gastown_http_requests",
    "HTTP requests answered, by view (URL name), method and status.",
    ["view", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "gastown_http_request_duration_seconds",
    "Time to answer an HTTP request (middleware to response), by view and method.",
    ["view", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBSOCKET_CLIENTS = Gauge(
    "gastown_websocket_clients",
    "Websocket clients connected to the live event stream now.",
    multiprocess_mode="livesum",
)
CELERY_TASK_SECONDS = Histogram(
    "gastown_celery_task_duration_seconds",
    "Time a Celery task ran, by task and final state.",
    ["task", "state"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0),
)
CELERY_TASK_WAIT_SECONDS = Histogram(
    "gastown_celery_task_queue_wait_seconds",
    "Time from a Celery task's publication (or its eta) to its start, by task.",
    ["task"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0),
)

# A message header carrying the publication time (set by `task_published`).
SENT_AT_HEADER = "gastown_sent_at"


def shared_between_processes() -> bool:
    """Whether these instruments write to the shared multiprocess directory."""
    return values.ValueClass is not values.MutexValue


def _forget_live_gauges() -> None:
    # a live gauge of a process that is gone must not count (websocket clients)
    multiprocess.mark_process_dead(os.getpid())


if shared_between_processes():
    atexit.register(_forget_live_gauges)


def http_request_observe(*, view: str, method: str, status: int, seconds: float) -> None:
    method = method if method in HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(view, method, str(status)).inc()
    HTTP_REQUEST_SECONDS.labels(view, method).observe(seconds)


# --- Celery (connected to its signals in gastown_site/celery.py) ----------------------------------

# task id -> when it started (monotonic), for tasks running in this process
_started: dict[str, float] = {}


def task_published(headers: dict[str, Any]) -> None:
    headers.setdefault(SENT_AT_HEADER, time.time())


def task_started(*, task_id: str, name: str, request: Any) -> None:
    _started[task_id] = time.monotonic()
    sent_at = getattr(request, SENT_AT_HEADER, None)
    if not isinstance(sent_at, int | float):
        return
    due = sent_at
    eta = getattr(request, "eta", None)  # an ISO 8601 text in the message, when there is one
    if isinstance(eta, str):  # a delayed task waits from its eta on
        with contextlib.suppress(ValueError):
            due = max(sent_at, datetime.fromisoformat(eta).timestamp())
    CELERY_TASK_WAIT_SECONDS.labels(name).observe(max(0.0, time.time() - due))


def task_finished(*, task_id: str, name: str, state: str | None) -> None:
    started = _started.pop(task_id, None)
    if started is not None:
        CELERY_TASK_SECONDS.labels(name, state or "UNKNOWN").observe(time.monotonic() - started)
