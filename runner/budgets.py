"""What agents cost, and the budgets that limit it: the writes. (The reads, what a limit has
spent and what that means, are in runner/limits.py.)

Usage a run reports (its output's usage lines, or `POST runs/{id}/usage/`) is added to the run
and to its convoy's spend, then every limit over the run is checked under a lock on its row:

- from 80% spent: one warning notice (the notice's topic is the budget's: later checks update
  it, never add another); the scheduler starts half as many runs at once under it;
- at 100%: one "needs a person" notice (critical, of kind escalation), its queued runs are
  cancelled, nothing new starts under it (`budget_reached`), and its live runs stop after their
  current step (`stop_by`: the supervisor stops the agent at its next usage report, or after
  GASTOWN_BUDGET_GRACE_SECONDS at the latest).

Setting, changing or deleting a budget checks it the same way (a limit set under what is spent
acts at once; a raised one resolves its notice)."""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from convoys.models import Convoy
from events.services import event_append
from notifications.models import Notification
from notifications.services import notices_resolve, notification_send
from rigs.models import Rig
from runner import services
from runner.limits import (
    LEVEL_RANK,
    RUN_FIELD,
    Level,
    Limit,
    RunScope,
    budgets_applying,
    limits_of,
)
from runner.models import AgentRun, Budget
from runner.rules import convoy_budget_message
from runner.usage import Usage


@transaction.atomic
def agent_run_usage_add(*, run: AgentRun, usage: Usage, source: str = "api") -> AgentRun:
    """Add tokens and dollars to a run and its convoy's spend, then check the limits over the
    run. The run comes back with its stop fields fresh: `stop_by` set means a budget is
    reached and the run should stop now that its step is over."""
    if usage.input_tokens < 0 or usage.output_tokens < 0 or usage.cost_usd < 0:
        raise ValidationError({"usage": "token counts and cost cannot be negative."})
    # Locks in one order, here and in every check: budget rows, the convoy, then runs (a
    # reached limit stops the runs under it). Concurrent reports wait for each other, so each
    # sees the others' spend and a level is announced once, and they never deadlock.
    budgets = budgets_applying([RunScope.of(run)], lock=True) if usage else []
    convoy, before = None, None
    if run.convoy_id is not None and usage.cost_usd:
        convoy = Convoy.objects.select_for_update().get(pk=run.convoy_id)
        before = convoy.spent_usd
    AgentRun.objects.filter(pk=run.pk).update(
        input_tokens=F("input_tokens") + usage.input_tokens,
        output_tokens=F("output_tokens") + usage.output_tokens,
        cost_usd=F("cost_usd") + usage.cost_usd,
    )
    run.refresh_from_db(fields=["input_tokens", "output_tokens", "cost_usd"])
    payload = {
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost_usd": str(run.cost_usd),
        "source": source,
    }
    if convoy is not None:
        Convoy.objects.filter(pk=convoy.pk).update(spent_usd=F("spent_usd") + usage.cost_usd)
        convoy.refresh_from_db(fields=["spent_usd"])
        payload["convoy_spent_usd"] = str(convoy.spent_usd)
    services.run_event(run, "run.usage", payload)
    budget = convoy.budget_usd if convoy is not None else None
    if budget is not None and before < budget <= convoy.spent_usd:
        convoy_budget_reached(convoy=convoy)
    if usage:
        if convoy is None and run.convoy_id is not None:
            convoy = Convoy.objects.get(pk=run.convoy_id)  # its own budget: no dollars now
        limits_check(run=run, budgets=budgets, convoy=convoy, convoy_spent_before=before)
    run.refresh_from_db(fields=["stop_requested_at", "stop_by", "kill_reason"])
    return run


@transaction.atomic
def convoy_budget_reached(*, convoy: Convoy) -> None:
    """The event convoys always had when their own budget is spent (what follows is the
    limits check's, as for every budget)."""
    event_append(
        "convoy.budget_reached",
        {
            "title": convoy.title,
            "budget_usd": str(convoy.budget_usd),
            "spent_usd": str(convoy.spent_usd),
            "message": convoy_budget_message(convoy),
        },
        repository_id=convoy.repository_id,
        convoy_id=convoy.id,
    )


def limits_check(
    *,
    run: AgentRun,
    budgets: list[Budget],
    convoy: Convoy | None,
    convoy_spent_before: Decimal | None = None,
) -> None:
    """Check every limit over `run` after it reported usage, and act on what changed:
    `budgets` (their rows locked) and its convoy's own budget (`convoy`, locked when this
    report brought dollars, with its spend before them in `convoy_spent_before`)."""
    for limit in limits_of(budgets, [convoy] if convoy is not None else []):
        if limit.budget is not None:
            before = limit.budget.level
        elif convoy_spent_before is not None:
            before = limit.level_at(convoy_spent_before, 0)
        else:
            before = limit.level  # no dollars this time: nothing crossed
        limit_apply(limit=limit, before=before, rig=run.rig)


def limit_apply(*, limit: Limit, before: str, rig: Rig | None = None) -> None:
    """Act on a limit checked under its lock (`before`: the level it had). While it is reached
    its runs are stopped and its queued runs cancelled, at every check (idempotent: a run
    already stopping is left alone). A change of level is announced once: an event and a
    notice on the budget's topic (on `rig`, or where its notice already is); a budget row
    moves its level with a conditional UPDATE, checked by row count."""
    after = limit.level
    if after == Level.REACHED:
        _limit_runs_stop(limit)
    if after == before:
        return
    if limit.budget is not None:
        moved = Budget.objects.filter(pk=limit.budget.pk, level=before).update(
            level=after, level_at=timezone.now()
        )
        if not moved:
            return  # another check announced it first
        limit.budget.level = after
    _limit_event(limit, before, after)
    if LEVEL_RANK[after] < LEVEL_RANK[before]:
        _limit_notices_resolve(limit, f"the {limit.title} is back to {limit.figures}")
        if after == Level.WARNING:
            _limit_notice(limit, after, rig)
        return
    _limit_notice(limit, after, rig)


def _limit_runs_stop(limit: Limit) -> None:
    """A reached limit: its live runs stop after their current step (at the latest after the
    grace period), its queued runs are cancelled."""
    now = timezone.now()
    under = {RUN_FIELD[limit.scope]: limit.target_id}
    reason = f"budget reached: the {limit.title}"[:200]
    live = list(
        AgentRun.objects.select_for_update(of=("self",))
        .filter(**under, state__in=AgentRun.PROCESS_STATES, stop_requested_at__isnull=True)
        .select_related("agent", "rig")
    )
    if live:
        grace = timedelta(seconds=settings.GASTOWN_BUDGET_GRACE_SECONDS)
        AgentRun.objects.filter(pk__in=[r.pk for r in live]).update(
            stop_requested_at=now, stop_by=now + grace, kill_reason=reason
        )
        for run in live:
            services.run_event(
                run, "run.stopping", {"agent": run.agent.name, "requested_by": reason}
            )
    queued = AgentRun.objects.filter(**under, state=AgentRun.State.QUEUED).select_related(
        "agent", "rig"
    )
    for run in queued:
        services.agent_run_cancel(run=run, reason=limit.refusal())


def _limit_event(limit: Limit, before: str, after: str) -> None:
    convoy_id = limit.target_id if limit.scope == Budget.Scope.CONVOY else None
    repository_id = limit.target_id if limit.scope == Budget.Scope.REPOSITORY else None
    event_append(
        "budget.level",
        {
            "budget": limit.budget.pk if limit.budget is not None else None,
            "key": limit.key,
            "label": limit.label,
            "window": limit.window,
            "from": before,
            "to": after,
            "spent_usd": f"{limit.spent_usd:.4f}",
            "spent_tokens": limit.spent_tokens,
            "message": f"the {limit.title}: {limit.figures}",
        },
        repository_id=repository_id,
        convoy_id=convoy_id,
    )


def _limit_notice(limit: Limit, level: str, rig: Rig | None) -> None:
    """The limit's one notice: a warning at 80%, then (the same notice, updated in place, when
    it is still open) a critical "needs a person" at 100%. It goes where its open notice is,
    else to `rig` (the rig whose run crossed it), else to the last rig that ran under it."""
    topic = limit.key
    notice = (
        Notification.objects.filter(topic=topic, state=Notification.State.OPEN)
        .select_related("rig")
        .order_by("-id")
        .first()
    )
    rig = notice.rig if notice is not None else rig or _last_rig(limit)
    if rig is None:
        return  # nothing ever ran under it: nobody to tell, nothing to stop
    if limit.budget is not None:
        where = f"the Budgets page (or PATCH /api/v1/budgets/{limit.budget.pk}/)"
    else:
        where = "the convoy in the admin (its budget_usd)"
    if level == Level.WARNING:
        kind, severity = Notification.Kind.INFO, Notification.Severity.WARNING
        summary = f"Budget at {limit.percent}%: the {limit.title}: {limit.figures}"
        action = (
            f"From now on at most {limit.cap()} of its runs go at once (half as many). At 100% "
            "no new run starts under it and its runs stop after their current step. If this "
            f"work should go on, raise the limit on {where}."
        )
    else:
        kind, severity = Notification.Kind.ESCALATION, Notification.Severity.CRITICAL
        summary = f"Needs a person: {limit.refusal()}"
        grace = f"{settings.GASTOWN_BUDGET_GRACE_SECONDS:g}"
        action = (
            "No new agent run starts under it; its runs stop after their current step (within "
            f"{grace} s) and its queued runs were cancelled. To go on, raise the limit on "
            f"{where} (or, for a daily or weekly limit, wait for older spend to leave the "
            "window), then launch the agents again."
        )
    notification_send(
        rig=rig,
        kind=kind,
        severity=severity,
        summary=summary,
        action=action,
        topic=topic,
        changes={
            "budget": limit.budget.pk if limit.budget is not None else None,
            "level": level,
            "window": limit.window,
            "limit_usd": limit.limit_usd,
            "limit_tokens": limit.limit_tokens,
            "spent_usd": limit.spent_usd,
            "spent_tokens": limit.spent_tokens,
        },
        convoy_id=limit.target_id if limit.scope == Budget.Scope.CONVOY else None,
        sender="budget",
    )


def _last_rig(limit: Limit) -> Rig | None:
    rig_id = (
        AgentRun.objects.filter(**{RUN_FIELD[limit.scope]: limit.target_id})
        .order_by("-id")
        .values_list("rig_id", flat=True)
        .first()
    )
    return Rig.objects.filter(pk=rig_id).first() if rig_id is not None else None


def _limit_notices_resolve(limit: Limit, resolution: str) -> None:
    notices_resolve(
        notifications=Notification.objects.filter(topic=limit.key), resolution=resolution
    )


# --- setting budgets (the API, the board, the admin) -------------------------------------------


@transaction.atomic
def budget_save(*, budget: Budget, by: str = "") -> Budget:
    """Create or change a budget (an unsaved one is created), then check it at once: a limit
    set under what is already spent warns or stops now; one raised above it resolves its
    notice. Refused (ValidationError naming the field) without exactly one target, without a
    limit, or when its target already has a budget for that window."""
    budget_validate(budget)
    budget.set_by = by[:150]
    try:
        with transaction.atomic():
            budget.save()
    except IntegrityError as exc:  # a racing request set the same target and window
        raise ValidationError({"window": _taken(budget)}) from exc
    _budget_event(budget, by)
    locked = (
        Budget.objects.select_for_update(of=("self",))
        .select_related("agent", "repository", "convoy")
        .get(pk=budget.pk)
    )
    (limit,) = limits_of([locked])
    limit_apply(limit=limit, before=locked.level)
    budget.refresh_from_db()
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, by: str = "") -> None:
    """Delete a budget: its notice is resolved, nothing more is limited by it."""
    limit = Limit.of_budget(budget)
    _budget_event(budget, by, deleted=True)
    _limit_notices_resolve(limit, f"the budget was deleted by {by or 'someone'}")
    Budget.objects.filter(pk=budget.pk).delete()


def _taken(budget: Budget) -> str:
    return (
        f"{budget.target_label} already has a {budget.window} budget: change that one "
        "(one budget per target and window)."
    )


def budget_validate(budget: Budget) -> None:
    """Every problem at once (ValidationError naming each field)."""
    targets = {
        Budget.Scope.AGENT: budget.agent_id,
        Budget.Scope.REPOSITORY: budget.repository_id,
        Budget.Scope.CONVOY: budget.convoy_id,
    }
    given = [scope for scope, target in targets.items() if target is not None]
    errors: dict[str, str] = {}
    if len(given) != 1:
        errors["scope"] = "name exactly one of agent, repository and convoy."
    if budget.limit_usd is None and budget.limit_tokens is None:
        errors["limit_usd"] = "set a limit in dollars, in tokens, or both."
    elif budget.limit_usd is not None and budget.limit_usd < 0:
        errors["limit_usd"] = "a limit cannot be negative."
    if budget.limit_tokens is not None and budget.limit_tokens < 0:
        errors["limit_tokens"] = "a limit cannot be negative."
    if budget.max_agents is not None and budget.max_agents < 1:
        errors["max_agents"] = "at least 1 (leave it empty for no cap)."
    if budget.window not in Budget.Window.values:
        errors["window"] = f"one of {', '.join(Budget.Window.values)}."
    if errors:
        raise ValidationError(errors)
    budget.scope = given[0]
    field = {"agent": "agent_id", "repository": "repository_id", "convoy": "convoy_id"}[given[0]]
    same = Budget.objects.filter(**{field: targets[given[0]]}, window=budget.window)
    if same.exclude(pk=budget.pk).exists():
        raise ValidationError({"window": _taken(budget)})


def _budget_event(budget: Budget, by: str, deleted: bool = False) -> None:
    event_append(
        "budget.changed",
        {
            "budget": budget.pk,
            "scope": budget.scope,
            "target": budget.target_label,
            "window": budget.window,
            "limit_usd": None if budget.limit_usd is None else str(budget.limit_usd),
            "limit_tokens": budget.limit_tokens,
            "max_agents": budget.max_agents,
            "by": by,
            "deleted": deleted,
        },
        repository_id=budget.repository_id,
        convoy_id=budget.convoy_id,
    )
