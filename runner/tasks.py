"""Thin Celery tasks for agent runs (they run where the worktrees are)."""

from celery import shared_task

from runner import logs, operations, services


@shared_task
def agent_runs_dispatch() -> list[int]:
    return operations.agent_runs_dispatch()


@shared_task
def agent_run_kill(run_id: int) -> None:
    operations.agent_run_kill(run_id)


@shared_task
def agent_runs_supervise() -> dict[str, int]:
    return operations.agent_runs_supervise()


@shared_task
def agent_runs_wake(rig_ids: list[int]) -> list[int]:
    return services.agent_runs_wake(rig_ids=rig_ids)


@shared_task
def agent_run_logs_prune() -> int:
    return len(logs.run_logs_prune())
