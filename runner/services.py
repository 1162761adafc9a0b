"""Agent runs: the writes. Each service is one transaction and appends its events.

A run is requested (queued), started by the scheduler when its rig is ready, a slot on this
machine is free and its budgets allow (`runner.operations.agent_runs_dispatch`), and ends
succeeded, failed, stopped or cancelled. A failed run is restarted as a new run with
backoff, up to `GASTOWN_RUN_MAX_RESTARTS` times, then escalated.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.errors import Refusal
from common.statemachine import IllegalTransition, transition
from convoys.models import Convoy, Leg
from convoys.selectors import (
    FinishedWork,
    rig_current_leg,
    rig_finished_work,
    work_finished_message,
)
from convoys.services.coordination import turn_notices_resolve
from convoys.services.leases import bead_claims_end_for_run, bead_leases_renew
from events.services import event_append
from notifications.models import Notification
from notifications.services import notification_send
from rigs.models import Rig
from runner import tasks
from runner.limits import RunScope, limit_reached
from runner.models import AgentRun
from runner.rules import (
    MAX_BACKOFF_SECONDS,
    agent_launchable,
    agent_runtime_command,
    exit_description,
    leg_needs_agent,
    turn_ended,
)

logger = logging.getLogger(__name__)
State = AgentRun.State
RENEW_MIN_GAIN_SECONDS = 60  # the run's output renews its claims' leases at most this often


class RunConflict(Refusal):
    """The run cannot be launched or changed now (409): `code` says why."""

    field = "rig"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def run_event(run: AgentRun, kind: str, payload: dict) -> None:
    """Append a run's event (its rig, convoy and attempt filled in)."""
    event_append(
        kind,
        {"run": run.id, "rig": run.rig_id, "attempt": run.attempt, **payload},
        repository_id=run.rig.repository_id,
        convoy_id=run.convoy_id,
        rig_id=run.rig_id,
    )


@transaction.atomic
def agent_run_transition(*, run: AgentRun, to: str, reason: str = "", **fields) -> AgentRun:
    old = run.state
    if reason:
        fields["reason"] = reason[:2000]
    transition(run, to, **fields)
    run_event(
        run,
        "run.state",
        {
            "from": old,
            "to": to,
            "agent": run.agent.name,
            "exit_code": run.exit_code,
            "reason": run.reason,
        },
    )
    if old in AgentRun.PROCESS_STATES and to not in AgentRun.PROCESS_STATES:
        # the run is over: the beads it claimed and did not close are open again
        ended = f"run {run.id} ended {to}" + (f" ({run.reason})" if run.reason else "")
        bead_claims_end_for_run(run_id=run.id, reason=f"{ended} without closing it")
    return run


@dataclass(frozen=True)
class LaunchRefusal:
    """Why a rig's agent cannot be launched: a 400 on ``field`` or a 409 with ``code``."""

    message: str
    field: str = ""
    code: str = ""

    def error(self) -> ValidationError | RunConflict:
        if self.code:
            return RunConflict(self.code, self.message)
        return ValidationError({self.field: self.message})


def agent_run_refusal(
    rig: Rig, convoy: Convoy | None, finished: FinishedWork | None = None
) -> LaunchRefusal | None:
    """Why the rig's agent cannot be launched now (None: it can), an active run aside. The one
    rule behind `agent_run_request` and the board's Launch button; ``convoy`` is the rig's
    current leg's, ``finished`` the rig's finished work (`rig_finished_work`: its leg landed).
    A budget reached over the launch (runner.limits) is a 409 `budget_reached` with its
    figures."""
    agent = rig.agent
    if agent is None:
        return LaunchRefusal(f"rig {rig.slug} has no agent to run.", field="rig")
    if not agent.is_active:
        return LaunchRefusal(f"agent {agent.name} is deactivated.", field="agent")
    if not agent_runtime_command(agent):
        return LaunchRefusal(
            f"agent {agent.name} has no runtime command: choose a runtime preset (scripted, "
            "claude, codex) or set its runtime command.",
            field="agent",
        )
    if rig.state in (Rig.State.FAILED, Rig.State.ARCHIVED):
        return LaunchRefusal(f"rig {rig.slug} is {rig.state}.", code="rig_not_runnable")
    if finished is not None:
        return LaunchRefusal(work_finished_message(rig, finished), code="work_finished")
    # every budget over the launch: its agent's, its repository's, its convoy's (2 queries)
    scope = RunScope(agent.id, rig.repository_id, convoy.pk if convoy is not None else None)
    if (reached := limit_reached(scope, convoy)) is not None:
        return LaunchRefusal(reached.refusal() + ".", code="budget_reached")
    return None


@transaction.atomic
def agent_run_request(
    *,
    rig: Rig,
    requested_by: str = "",
    reason: str = "",
    leg: Leg | None = None,
    attempt: int = 1,
    restart_of: AgentRun | None = None,
    not_before=None,
    by_person: bool = False,
) -> AgentRun:
    """Queue a run of the rig's agent. Refused (ValidationError) when there is nothing to run,
    (RunConflict) when the rig already has an active run, its work is finished (its leg
    landed) or a budget over it is reached. `by_person`: a person launched it, which answers
    the rig's "turn ended" notices (the agent is back at work)."""
    current = rig_current_leg(rig)
    leg = leg or current
    finished = rig_finished_work(rig, None) if current is None else None
    convoy = Convoy.objects.get(pk=leg.convoy_id) if leg is not None else None  # fresh spend
    if (refusal := agent_run_refusal(rig, convoy, finished)) is not None:
        raise refusal.error()
    agent, command = rig.agent, agent_runtime_command(rig.agent, rig.repository)
    active = AgentRun.objects.filter(rig=rig, state__in=AgentRun.ACTIVE_STATES).first()
    if active is not None:
        raise RunConflict(
            "run_active", f"rig {rig.slug} already has run {active.id} ({active.state})."
        )
    run = AgentRun(
        rig=rig,
        agent=agent,
        leg=leg,
        convoy=convoy,
        command=command,
        attempt=attempt,
        restart_of=restart_of,
        not_before=not_before,
        requested_by=requested_by[:150],
        reason=reason[:2000],
    )
    try:
        with transaction.atomic():
            run.save()
    except IntegrityError as exc:  # a racing request took the rig's one active slot
        raise RunConflict("run_active", f"rig {rig.slug} already has an active run.") from exc
    queued = {"from": "", "to": State.QUEUED, "agent": agent.name, "reason": reason}
    run_event(run, "run.state", queued)
    if by_person:
        turn_notices_resolve(rig=rig, resolution=f"the agent was launched again by {requested_by}")
    delay = (not_before - timezone.now()).total_seconds() if not_before else 0
    transaction.on_commit(lambda: dispatch_soon(max(0.0, delay)))
    return run


def dispatch_soon(countdown: float = 0.0) -> None:
    """Start what can start (a task; call it after the commit)."""
    tasks.agent_runs_dispatch.apply_async(countdown=countdown + (0.05 if countdown else 0))


@transaction.atomic
def agent_run_cancel(*, run: AgentRun, reason: str) -> AgentRun:
    return agent_run_transition(
        run=run, to=State.CANCELLED, reason=reason, finished_at=timezone.now()
    )


@transaction.atomic
def agent_run_mark_starting(
    *, run: AgentRun, host: str, token_hash: str, log_path: str
) -> AgentRun:
    return agent_run_transition(
        run=run,
        to=State.STARTING,
        host=host,
        token_hash=token_hash,
        log_path=log_path,
        started_at=timezone.now(),
    )


@transaction.atomic
def agent_run_mark_running(*, run: AgentRun, pid: int) -> AgentRun:
    run = AgentRun.objects.select_for_update().select_related("agent", "rig").get(pk=run.pk)
    return agent_run_transition(run=run, to=State.RUNNING, pid=pid)


@transaction.atomic
def agent_run_exited(
    *,
    run: AgentRun,
    exit_code: int | None,
    reason: str = "",
    start_failure: str = "",
    seconds: float | None = None,
    log_tail: list[str] | None = None,
) -> AgentRun:
    """The run's process ended (or was found gone). Idempotent: a run that already ended is
    returned unchanged. A failure is restarted with backoff or escalated; a failure at start
    (``start_failure``: the CLI's own error, runner.startup) is escalated at once with the last
    lines of its log (``log_tail``), since another attempt would fail the same way."""
    run = AgentRun.objects.select_for_update().select_related("agent", "rig").get(pk=run.pk)
    if run.state not in AgentRun.PROCESS_STATES:
        return run
    now = timezone.now()
    described = exit_description(exit_code)
    if run.stop_requested_at is None and start_failure:
        after = f" after {seconds:.0f} s" if seconds is not None else ""
        why = f"failed at start ({described}{after}): {start_failure}"
        agent_run_transition(
            run=run, to=State.FAILED, reason=why, exit_code=exit_code, finished_at=now
        )
        agent_run_escalate(
            run=run,
            why=f"its CLI failed at start, not restarted: {start_failure}",
            log_tail=log_tail or [],
        )
        transaction.on_commit(dispatch_soon)
        return run
    if run.stop_requested_at is not None:
        to, why = State.STOPPED, f"{run.kill_reason or 'stopped'} ({described})"
    elif exit_code == 0 and not run.kill_reason:
        to, why = State.SUCCEEDED, reason or described
    else:
        to, why = State.FAILED, f"{run.kill_reason or reason or described}"
        if run.kill_reason and described not in why:
            why += f" ({described})"
    agent_run_transition(run=run, to=to, reason=why, exit_code=exit_code, finished_at=now)
    if to == State.FAILED:
        backoff = min(
            MAX_BACKOFF_SECONDS, settings.GASTOWN_RUN_BACKOFF_SECONDS * 2 ** (run.attempt - 1)
        )
        _restart(run, run.reason, backoff, used_up=f"it failed {run.attempt} time(s)")
    elif to == State.SUCCEEDED and (leg := _leg_needing_agent(run.leg_id)) is not None:
        # It stopped before its work was done (an LLM session ends when the model stops):
        # launched again, it picks up from its beads and inbox.
        cause = f"it exited with leg {leg.key} still {leg.state}"
        used_up = f"it ended {run.attempt} time(s) with leg {leg.key} not done"
        _restart(run, cause, 0, used_up=used_up)
    transaction.on_commit(dispatch_soon)
    return run


def _leg_needing_agent(leg_id: int | None) -> Leg | None:
    if leg_id is None:
        return None
    leg = Leg.objects.select_related("convoy").get(pk=leg_id)
    return leg if leg_needs_agent(leg) else None


def _restart(run: AgentRun, cause: str, backoff: float, *, used_up: str) -> None:
    """Launch the run again after ``backoff`` seconds (the same restart chain: at most
    GASTOWN_RUN_MAX_RESTARTS), or escalate when the restarts are used up (``used_up`` says
    how) or a new launch is refused (the rig failed, say). A budget reached is no escalation
    of the run's own: the budget's notice already asks a person (a `run.refused` event)."""
    rig = Rig.objects.select_related("agent").get(pk=run.rig_id)
    if rig_finished_work(rig) is not None:
        return  # its leg landed (or ended) meanwhile: nothing to go on with, no one to ask
    if turn_ended(rig.pk, run.leg_id) is not None:
        return  # the agent ended its turn (escalated or deferred): a person acts first
    limit = settings.GASTOWN_RUN_MAX_RESTARTS
    if run.attempt > limit:
        agent_run_escalate(run=run, why=used_up)
        return
    try:
        agent_run_request(
            rig=rig,
            requested_by="runner",
            reason=f"restart {run.attempt} of {limit} after run {run.id}: {cause}",
            leg=run.leg,
            attempt=run.attempt + 1,
            restart_of=run,
            not_before=timezone.now() + timedelta(seconds=backoff) if backoff else None,
        )
    except (ValidationError, RunConflict) as exc:
        message = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        if isinstance(exc, RunConflict) and exc.code == "budget_reached":
            # the budget's own notice asks a person, once for all its runs
            _refused_event(rig, run.leg, message)
            return
        agent_run_escalate(run=run, why=f"it cannot be restarted: {message}")


def agent_run_launch_for_leg(
    *, rig: Rig, leg: Leg, requested_by: str, reason: str
) -> AgentRun | None:
    """Launch the rig's agent for its leg, on the runner's own initiative. A refusal (a budget
    is reached, the rig failed...) is not an error here: the convoy says why
    with a `run.refused` event, and None is returned."""
    try:
        with transaction.atomic():
            return agent_run_request(rig=rig, leg=leg, requested_by=requested_by, reason=reason)
    except (ValidationError, RunConflict) as exc:
        if isinstance(exc, RunConflict) and exc.code == "run_active":
            return None  # launched meanwhile: that run reads the inbox
        why = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        logger.warning("no agent launched in rig %s for leg %s: %s", rig.slug, leg.pk, why)
        _refused_event(rig, leg, why)
        return None


def _refused_event(rig: Rig, leg: Leg | None, why: str) -> None:
    event_append(
        "run.refused",
        {"rig": rig.id, "leg": leg.key if leg else None, "agent": rig.agent.name, "reason": why},
        repository_id=rig.repository_id,
        convoy_id=leg.convoy_id if leg else None,
        rig_id=rig.id,
    )


@transaction.atomic
def agent_run_escalate(*, run: AgentRun, why: str, log_tail: list[str] | None = None) -> AgentRun:
    """Tell the people watching: a critical notification on the rig (it reaches the convoy's
    page, the board and the repository's webhooks) and a `run.escalated` event. ``log_tail``:
    the last lines of the run's output, shown with the notice."""
    AgentRun.objects.filter(pk=run.pk).update(escalated_at=timezone.now())
    if log_tail:
        summary = f"Agent {run.agent.name} needs a person in rig {run.rig.slug}: {why}"
        action = (
            f"The last lines of run {run.id}'s log:\n"
            + "\n".join(log_tail)
            + "\nFix the cause (an API key or login in the rig's home, the network, the "
            "command), then launch the agent again."
        )
    else:
        summary = (
            f"Agent {run.agent.name} needs a person in rig {run.rig.slug}: {why}; last run "
            f"{run.id} {run.reason}"
        )
        action = "Read the run's log on the rig page, fix the cause, then launch the agent again."
    changes = {"run": run.id, "attempt": run.attempt, "exit_code": run.exit_code}
    if log_tail:
        changes["log_tail"] = log_tail
    notification_send(
        rig=run.rig,
        kind=Notification.Kind.ESCALATION,
        severity=Notification.Severity.CRITICAL,
        summary=summary,
        action=action,
        changes=changes,
        convoy_id=run.convoy_id,
    )
    run_event(run, "run.escalated", {"agent": run.agent.name, "reason": why})
    return run


@transaction.atomic
def agent_run_stop(*, run: AgentRun, requested_by: str = "") -> AgentRun:
    """Stop a run: a queued one is cancelled; a live one has its process group terminated by a
    worker (SIGTERM, then SIGKILL after the grace period) and ends `stopped`."""
    run = AgentRun.objects.select_for_update().select_related("agent", "rig").get(pk=run.pk)
    who = f" by {requested_by}" if requested_by else ""
    if run.state == State.QUEUED:
        return agent_run_cancel(run=run, reason=f"stopped{who} before it started")
    if run.state not in AgentRun.PROCESS_STATES:
        raise IllegalTransition(f"run {run.id} already ended ({run.state}).")
    if run.stop_requested_at is None:
        AgentRun.objects.filter(pk=run.pk).update(
            stop_requested_at=timezone.now(), kill_reason=f"stopped{who}"[:200]
        )
        run.refresh_from_db()
        run_event(run, "run.stopping", {"agent": run.agent.name, "requested_by": requested_by})

    transaction.on_commit(lambda: tasks.agent_run_kill.delay(run.id))
    return run


@transaction.atomic
def agent_run_output_seen(*, run_id: int) -> None:
    """The supervisor saw output: the run is alive, and so are the claims it holds (renewed
    at most once a minute: a renewal that would gain less is skipped)."""
    now = timezone.now()
    AgentRun.objects.filter(pk=run_id).update(last_output_at=now)
    gain = min(RENEW_MIN_GAIN_SECONDS, settings.GASTOWN_CLAIM_LEASE_SECONDS / 10)
    bead_leases_renew(run_id=run_id, now=now, min_gain_seconds=gain)


# --- what other apps' signals ask of the runner (runner/receivers.py) ------------------------


def agent_run_launch_for_handed_leg(*, leg: Leg, rig: Rig) -> AgentRun | None:
    """A convoy handed `leg` to `rig`: launch the rig's agent, unless it has none the runner
    can run or it is running already (that run reads the "assigned"/"unblocked" notification
    itself)."""
    if not agent_launchable(rig.agent):
        return None
    if AgentRun.objects.filter(rig=rig, state__in=AgentRun.ACTIVE_STATES).exists():
        return None
    if turn_ended(rig.pk, leg.pk) is not None:
        return None  # its agent ended its turn on this leg: a person acts first
    return agent_run_launch_for_leg(
        rig=rig,
        leg=leg,
        requested_by=f"convoy:{leg.convoy.slug}",
        reason=f"leg {leg.key} of convoy '{leg.convoy.title}' handed to rig {rig.slug}",
    )


def agent_runs_dispatch_when_provisioned(*, rig: Rig, old_state: str, new_state: str) -> None:
    """A rig that just became ready may have runs queued for it: start them after the commit."""
    provisioned = new_state == Rig.State.READY and old_state == Rig.State.PROVISIONING
    if provisioned and AgentRun.objects.filter(rig=rig, state=AgentRun.State.QUEUED).exists():
        transaction.on_commit(dispatch_soon)


@transaction.atomic
def convoy_runs_stop(*, convoy: Convoy) -> None:
    """A cancelled convoy's agents stop: queued runs are cancelled, live ones terminated."""
    runs = AgentRun.objects.filter(convoy=convoy, state__in=AgentRun.ACTIVE_STATES)
    for run in runs.select_related("agent", "rig"):
        agent_run_stop(run=run, requested_by=f"convoy {convoy.slug} cancelled")
