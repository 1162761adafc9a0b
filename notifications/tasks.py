"""Thin Celery tasks for notifications: webhook deliveries.

One way only, as in every app: `notifications.webhooks` imports this module at the top and
enqueues with `transaction.on_commit`; a task imports what it calls inside its body."""

from celery import shared_task


@shared_task
def webhook_deliver(delivery_id: int) -> None:
    """One attempt; a failure schedules the next with exponential backoff."""
    from notifications import webhooks

    delay = webhooks.webhook_deliver(delivery_id)
    if delay is not None:
        webhook_deliver.apply_async((delivery_id,), countdown=delay)
