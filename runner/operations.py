"""Process-side bodies of the runner's tasks: start queued runs, stop runs, watch live ones.

They run on the machine that holds the worktrees (a Celery worker there), combine the
database (services) with processes (common.process), and are idempotent.
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from common import process
from common.clock import db_now
from common.statemachine import StaleState
from rigs.models import hash_token
from runner import rules, services
from runner.limits import DispatchBook
from runner.models import AgentRun

logger = logging.getLogger(__name__)
State = AgentRun.State
# A supervisor that has not reported its agent's pid after this long is presumed dead.
STARTING_LIMIT_SECONDS = 60


def _start_verdict(run: AgentRun, book: DispatchBook) -> str:
    """'go', 'wait', or the reason the queued run is cancelled instead."""
    rig = run.rig
    if not run.agent.is_active:
        return f"agent {run.agent.name} was deactivated"
    if rig.agent_id != run.agent_id:
        return f"rig {rig.slug} now belongs to another agent"
    if rig.state in rules.PENDING_RIG_STATES:
        return "wait"
    if rig.state not in rules.RUNNABLE_RIG_STATES:
        return f"rig {rig.slug} is {rig.state}"
    return book.verdict(run)  # its budgets: reached (cancelled), at their cap (waits), or go


def agent_runs_dispatch() -> list[int]:
    """Start queued runs while this machine has free agent slots (GASTOWN_MAX_AGENTS). Oldest
    first; a run waits while its rig is provisioning, its backoff lasts or a budget over it has
    as many runs going as it allows (half from 80% spent). Returns started ids."""
    host = process.host_name()
    started: list[int] = []
    with process.host_lock():
        busy = AgentRun.objects.filter(state__in=AgentRun.PROCESS_STATES, host=host).count()
        free = settings.GASTOWN_MAX_AGENTS - busy
        if free <= 0:
            return started
        queued = (
            AgentRun.objects.filter(state=State.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=timezone.now()))
            # runs waiting for their rig do not hold up the ones behind them
            .exclude(rig__state__in=rules.PENDING_RIG_STATES)
            .select_related("rig", "agent")
            .order_by("created_at", "id")
        )
        candidates = list(queued[: free + 50])
        book = DispatchBook(candidates)  # the budgets over them, read once
        for run in candidates:
            if len(started) >= free:
                break
            verdict = _start_verdict(run, book)
            if verdict == "wait":
                continue
            try:
                if verdict != "go":
                    services.agent_run_cancel(run=run, reason=verdict)
                    continue
                token = run.issue_token()
                log_path = process.log_path_for(run.id)
                services.agent_run_mark_starting(
                    run=run, host=host, token_hash=hash_token(token), log_path=str(log_path)
                )
            except StaleState:
                continue  # stopped or cancelled meanwhile
            book.started(run)
            try:
                pid = process.supervisor_spawn(run.id, token)
            except OSError as exc:
                services.agent_run_exited(run=run, exit_code=None, reason=f"cannot start: {exc}")
                continue
            AgentRun.objects.filter(pk=run.pk).update(supervisor_pid=pid)
            started.append(run.id)
    return started


def agent_run_kill(run_id: int) -> None:
    """Terminate a run's processes (its stop was requested). The supervisor records the end;
    if the supervisor is gone too, the end is recorded here."""
    run = AgentRun.objects.select_related("agent", "rig").get(pk=run_id)
    if run.state not in AgentRun.PROCESS_STATES:
        return
    process.run_terminate(run.id, run.pid, settings.GASTOWN_RUN_STOP_GRACE_SECONDS)
    deadline = time.monotonic() + 10
    while process.process_is_run(run.supervisor_pid, run.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    services.agent_run_exited(run=run, exit_code=None)  # no-op when the supervisor recorded it


def agent_runs_supervise() -> dict[str, int]:
    """Periodic: find runs whose supervisor died (recorded as failed, their agent killed) and
    runs silent past the heartbeat limit (no output and no heartbeat: killed, then restarted
    by the usual failure path); then start what can start."""
    host = process.host_name()
    now = db_now()  # the database's clock: a worker's jumped clock kills no live agent
    limit = timedelta(seconds=settings.GASTOWN_HEARTBEAT_LIMIT_SECONDS)
    lost = silent = 0
    live = AgentRun.objects.filter(state__in=AgentRun.PROCESS_STATES, host=host).select_related(
        "rig", "agent"
    )
    for run in live:
        if not process.process_is_run(run.supervisor_pid, run.id):
            started = run.started_at or run.created_at
            if run.state == State.STARTING and now - started < timedelta(
                seconds=STARTING_LIMIT_SECONDS
            ):
                continue
            process.run_terminate(run.id, run.pid, grace=2)
            services.agent_run_exited(
                run=run, exit_code=None, reason="its supervisor process disappeared"
            )
            lost += 1
            continue
        if run.state != State.RUNNING or run.stop_requested_at is not None:
            continue
        seen = [t for t in (run.started_at, run.last_output_at, run.rig.last_heartbeat_at) if t]
        if seen and now - max(seen) > limit:
            quiet = int((now - max(seen)).total_seconds())
            AgentRun.objects.filter(pk=run.pk).update(
                kill_reason=f"silent for {quiet} s (no output and no heartbeat)"
            )
            process.run_terminate(run.id, run.pid, settings.GASTOWN_RUN_STOP_GRACE_SECONDS)
            silent += 1
    started = agent_runs_dispatch()
    return {"lost": lost, "silent": silent, "started": len(started)}


def agent_runs_shutdown(reason: str = "Gas Town is shutting down") -> int:
    """Stop every run this machine started (so nothing is left running), and queue each again
    so the work resumes when Gas Town starts next. Returns how many were stopped."""
    host = process.host_name()
    runs = list(
        AgentRun.objects.filter(state__in=AgentRun.PROCESS_STATES, host=host).select_related(
            "rig", "agent", "leg"
        )
    )
    for run in runs:
        AgentRun.objects.filter(pk=run.pk).update(
            stop_requested_at=timezone.now(), kill_reason=reason[:200]
        )
        process.run_terminate(run.id, run.pid, grace=5)
        for pid in process.run_processes(run.id):  # the supervisor, if it did not record it
            process.group_signal(pid, 9)
        run.refresh_from_db()
        services.agent_run_exited(run=run, exit_code=None)
        if rules.turn_ended(run.rig_id, run.leg_id) is not None:
            continue  # its agent had ended its turn: a person relaunches it
        try:
            services.agent_run_request(
                rig=run.rig,
                requested_by="runner",
                reason=f"resumes run {run.id}, stopped when Gas Town shut down",
                leg=run.leg,
                attempt=run.attempt,
            )
        except Exception:  # resuming is a convenience: never block a shutdown on it
            logger.warning("run %s not queued again", run.id, exc_info=True)
    return len(runs)
