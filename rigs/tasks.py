"""Thin Celery tasks: each calls one operation or service. All are idempotent (acks_late).

The import rule (the same in every app): services import this module at the top and enqueue
with `transaction.on_commit(lambda: tasks.x.delay(...))`; a task imports the services and
operations it calls inside its own body. So `tasks` imports nothing of rigs at module level
but models, and no module-level import circle can form through it."""

from celery import shared_task

from rigs.models import Rig


@shared_task
def repository_init(repository_id: int) -> None:
    from rigs import operations

    operations.repository_init_run(repository_id)


@shared_task
def rig_provision(rig_id: int) -> None:
    from rigs import operations

    operations.rig_provision_run(rig_id)


@shared_task
def rig_sync(rig_id: int) -> None:
    from rigs import operations

    operations.rig_sync_run(rig_id)


@shared_task
def rig_sync_all() -> int:
    """Periodic: sync every live rig (each in its own task, so one slow repo blocks nothing)."""
    ids = list(Rig.objects.filter(state__in=Rig.LIVE_STATES).values_list("id", flat=True))
    for rig_id in ids:
        rig_sync.delay(rig_id)
    return len(ids)


@shared_task
def rig_provisions_kick() -> int:
    """Periodic safety net: provision again the rigs whose provisioning task was lost."""
    from rigs.selectors import rigs_provision_stranded

    ids = rigs_provision_stranded()
    for rig_id in ids:
        rig_provision.delay(rig_id)
    return len(ids)


@shared_task
def rig_teardown(rig_id: int, force: bool = False, requested_by: str = "") -> str:
    from rigs import operations

    return operations.rig_teardown_run(rig_id, force, requested_by)


@shared_task
def rigs_mark_stalled() -> int:
    from rigs import services

    return len(services.rigs_mark_stalled())


@shared_task
def reconcile(repair: bool = True) -> list[dict]:
    from rigs import operations

    report = operations.reconcile_run(repair=repair)
    return [d.__dict__ for d in report.drifts]


@shared_task
def merge_queue_process(repository_id: int, target_branch: str) -> int:
    from rigs import merge_queue

    return merge_queue.merge_queue_process(repository_id, target_branch)


@shared_task
def merge_queues_kick() -> int:
    """Periodic safety net: process every queue with active requests (recovers after crashes)."""
    from rigs import merge_queue

    queues = merge_queue.merge_queues_with_work()
    for repository_id, target_branch in queues:
        merge_queue_process.delay(repository_id, target_branch)
    return len(queues)


@shared_task
def rig_rebase(rig_id: int, onto: str) -> bool:
    """Rebase an idle rig onto `onto` under its lock and record the sync."""
    from rigs import operations

    rig = Rig.objects.select_related("repository").get(pk=rig_id)
    return operations.rig_rebase_run(rig=rig, onto=onto)
