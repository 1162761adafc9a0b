"""Thin Celery tasks for cascades: the ones that read git (a landed merge, the overlap radar
after a rig's branch moved).

One way only, as in every app: `cascades.landed` and `cascades.overlap` import this module at
the top and enqueue with `transaction.on_commit`; the task imports what it calls inside its
body."""

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


@shared_task
def cascade_overlap(rig_id: int) -> int:
    """The overlap radar for one rig whose branch moved: idempotent (it reads the tips now)."""
    from cascades import overlap

    return len(overlap.cascade_overlap(rig_id=rig_id))
