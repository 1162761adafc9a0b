"""The Celery app. Tasks live in each app's `tasks.py` and are thin wrappers over services.

Its signals give each task's log lines the task's id, name, rig and convoy (common/logs.py), time
each task and its wait in the queue (common/metrics.py), and let Django's LOGGING settings rule
the worker's and the scheduler's logs (LOG_FORMAT, LOG_LEVEL) instead of Celery's own set-up.
The handlers import what they need when called: this module is imported before the settings
are read, and prometheus_client must be imported after them.
"""

import inspect
import logging.config
import os
from typing import Any

from celery import Celery, Task, signals
from kombu.exceptions import OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gastown_site.settings")

logger = logging.getLogger("gastown.tasks")


class GastownTask(Task):
    """Every task: enqueuing it never raises for a broker that cannot be reached. A task is
    enqueued after its transaction committed (`transaction.on_commit`): raising then turned a
    stored change into a 500 (the client retried and was told the rig already exists) and lost
    the task all the same. The row is the truth; the periodic safety nets (merge_queues_kick,
    rig_provisions_kick, the lease sweep, reconcile) find the work again once Redis is back."""

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().apply_async(*args, **kwargs)
        except OperationalError as exc:
            logger.error("could not enqueue %s (broker unreachable: %s)", self.name, exc)
            return None


app = Celery("gastown", task_cls=GastownTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Task arguments that name what a task is about, and the log context key each fills.
CONTEXT_ARGUMENTS = {"rig_id": "rig", "convoy_id": "convoy"}


@signals.setup_logging.connect
def logging_setup(**kwargs: Any) -> None:
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


def task_context(task: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """The rig and convoy a task is about, read from its arguments by name."""
    try:
        bound = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (TypeError, ValueError):
        return {}
    return {
        key: bound.arguments[name]
        for name, key in CONTEXT_ARGUMENTS.items()
        if name in bound.arguments
    }


@signals.before_task_publish.connect
def task_publish(headers: dict | None = None, **kwargs: Any) -> None:
    from common import metrics

    if headers is not None:
        metrics.task_published(headers)


# task id -> its log context token, for the tasks running in this process
_context_tokens: dict[str, Any] = {}


@signals.task_prerun.connect
def task_start(task_id: str, task: Any, args: Any = None, kwargs: Any = None, **rest: Any) -> None:
    from common import metrics
    from common.logs import log_context_push

    _context_tokens[task_id] = log_context_push(
        task_id=task_id, task=task.name, **task_context(task, args, kwargs)
    )
    metrics.task_started(task_id=task_id, name=task.name, request=task.request)


@signals.task_success.connect
def task_success(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
    from django.conf import settings

    from common.logs import tick_idle_mark, tick_was_idle

    if sender is not None and sender.name in settings.GASTOWN_TICK_TASKS and tick_was_idle(result):
        tick_idle_mark()


@signals.task_postrun.connect
def task_end(task_id: str, task: Any, state: str | None = None, **kwargs: Any) -> None:
    from common import metrics
    from common.logs import log_context_pop

    metrics.task_finished(task_id=task_id, name=task.name, state=state)
    token = _context_tokens.pop(task_id, None)
    if token is not None:
        log_context_pop(token)
