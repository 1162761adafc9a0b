"""Thin Celery tasks for convoys: cascades that need git, and webhook deliveries."""

from celery import shared_task

from convoys import cascades, webhooks


@shared_task
def cascade_merge_landed(
    repository_id: int,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    merge_request_ids: list[int],
) -> int:
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
    delay = webhooks.webhook_deliver(delivery_id)
    if delay is not None:
        webhook_deliver.apply_async((delivery_id,), countdown=delay)
