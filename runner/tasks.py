"""Thin Celery tasks for agent runs (they run where the worktrees are).

Services import this module and enqueue after the commit; a task reaches its service or
operation with an import inside the function, so the dependency runs one way."""

from celery import shared_task


@shared_task
def agent_runs_dispatch() -> list[int]:
    from runner import operations

    return operations.agent_runs_dispatch()


@shared_task
def agent_run_kill(run_id: int) -> None:
    from runner import operations

    operations.agent_run_kill(run_id)


@shared_task
def agent_runs_supervise() -> dict[str, int]:
    from runner import operations

    return operations.agent_runs_supervise()


@shared_task
def agent_runs_wake(rig_ids: list[int]) -> list[int]:
    from runner import wakes

    return wakes.agent_runs_wake(rig_ids=rig_ids)


@shared_task
def agent_run_logs_prune() -> int:
    from runner import logs

    return len(logs.run_logs_prune())
