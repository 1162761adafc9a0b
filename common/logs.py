"""Log lines that say where they come from.

- `log_context`: what the current request or task is about (request id, task id, rig, convoy),
  in a context variable, set by `common.middleware.RequestContextMiddleware` and by the Celery
  signals in `gastown_site/celery.py`.
- `JsonFormatter` (`LOG_FORMAT=json`): one JSON object per line with the time, level, logger,
  message, process role and host, the context, and any `extra=` fields.
- `QuietTicksFilter`: a periodic beat task that found nothing to do logs at DEBUG, so the
  10-second supervision tick does not fill the log at INFO.
"""

import json
import logging
import os
import socket
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from django.conf import settings

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# Replaced, never changed in place: a copied context (a thread, a task) keeps its own.
_context: ContextVar[Mapping[str, Any]] = ContextVar("gastown_log_context", default=_EMPTY)


def log_context() -> Mapping[str, Any]:
    """What the current request or task is about (read-only)."""
    return _context.get()


def log_context_set(**values: Any) -> None:
    """Add to the current context (None values are left out)."""
    _context.set({**_context.get(), **{k: v for k, v in values.items() if v is not None}})


def log_context_clear() -> None:
    _context.set(_EMPTY)


def log_context_push(**values: Any) -> Token:
    """A new context of `values` only (a task's), until `log_context_pop` restores the one before
    (a task run eagerly inside a request gives the request's back)."""
    return _context.set({k: v for k, v in values.items() if v is not None})


def log_context_pop(token: Token) -> None:
    try:
        _context.reset(token)
    except ValueError:  # pushed in another context: nothing of ours to restore here
        log_context_clear()


def process_role(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """web, worker, scheduler or supervisor: GASTOWN_ROLE when set (`make run` sets it for its
    children), else read from the command line; `manage` for anything else."""
    environ = os.environ if environ is None else environ
    argv = sys.argv if argv is None else argv
    if environ.get("GASTOWN_ROLE"):
        return environ["GASTOWN_ROLE"]
    program = argv[0] if argv else ""
    if "daphne" in program or "uvicorn" in program or program.endswith("gastown_site/web.py"):
        return "web"
    if program.endswith("runner/supervisor.py"):
        return "supervisor"
    if "celery" in program:
        return "worker" if "worker" in argv else "scheduler" if "beat" in argv else "manage"
    return "manage"


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, role, host, then
    the log context (request_id, task_id, task, rig, convoy), any `extra=` fields, and the
    traceback as `exception`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.role = process_role()
        self.host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "role": self.role,
            "host": self.host,
            **log_context(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


# --- quiet ticks --------------------------------------------------------------------------------

# Celery's own lines about a task: received (worker), sent (beat), succeeded (after it ran).
_RECEIVED = "celery.worker.strategy"
_SENT = "celery.beat"
_TRACE = "celery.app.trace"


def tick_was_idle(result: Any) -> bool:
    """A tick's return value says it did nothing: None, 0, an empty list, or a dict of zeros."""
    if isinstance(result, Mapping):
        return not any(result.values())
    return not result


def tick_idle_mark() -> None:
    """Called (task_success) when a tick's result says it did nothing: its success line, logged
    next in the same context, is then quiet."""
    log_context_set(tick_idle=True)


class QuietTicksFilter(logging.Filter):
    """Celery's lines about a beat task (settings.GASTOWN_TICK_TASKS) go down to DEBUG: "received"
    and "sending due task" always, "succeeded" when the tick did nothing. A line so lowered is
    kept only when its logger logs DEBUG. Everything else passes unchanged. Set on Celery's
    loggers (settings.LOGGING), so it decides once for every handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in (_RECEIVED, _SENT, _TRACE):
            return True
        if not self._quiet(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    @staticmethod
    def _quiet(record: logging.LogRecord) -> bool:
        ticks = settings.GASTOWN_TICK_TASKS
        if record.name == _SENT:  # "Scheduler: Sending due task %s (%s)", entry name and task
            args = record.args if isinstance(record.args, tuple) else ()
            return len(args) == 2 and args[1] in ticks
        data = record.args if isinstance(record.args, Mapping) else {}
        if data.get("name") not in ticks:
            return False
        if record.name == _RECEIVED:
            return True
        return "return_value" in data and bool(log_context().get("tick_idle"))
