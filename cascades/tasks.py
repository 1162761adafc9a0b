"""Thin Celery tasks for cascades: the one that needs git (a landed merge).

One way only, as in every app: `cascades.landed` imports this module at the top and enqueues
with `transaction.on_commit`; the task imports what it calls inside its body."""

from celery import shared_task


@shared_task
def cascade_merge_landed(
    repository_id: int,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    merge_request_ids: list[int],
) -> int:
    from cascades import landed

    return len(
        landed.cascade_merge_landed(
            repository_id=repository_id,
            target_branch=target_branch,
            old_tip=old_tip,
            new_tip=new_tip,
            merge_request_ids=merge_request_ids,
        )
    )
