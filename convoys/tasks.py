"""Thin Celery tasks for convoys: cascades that need git, and webhook deliveries.

One way only, as in every app: services (and notifications, webhooks) import this module at the
top and enqueue with `transaction.on_commit`; a task imports what it calls inside its body."""

from celery import shared_task


@shared_task
def cascade_merge_landed(
    repository_id: int,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    merge_request_ids: list[int],
) -> int:
    from convoys import cascades

    return len(
        cascades.cascade_merge_landed(
            repository_id=repository_id,
            target_branch=target_branch,
            old_tip=old_tip,
            new_tip=new_tip,
            merge_request_ids=merge_request_ids,
        )
    )


@shared_task
def webhook_deliver(delivery_id: int) -> None:
    """One attempt; a failure schedules the next with exponential backoff."""
    from convoys import webhooks

    delay = webhooks.webhook_deliver(delivery_id)
    if delay is not None:
        webhook_deliver.apply_async((delivery_id,), countdown=delay)
