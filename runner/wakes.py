"""Waking idle agents: a rig told to act (an interface it uses changed, its merge conflicted,
its gate failed, a person answered its escalation...) whose agent is not running gets it
launched, so that someone acts on it; bounded per leg by GASTOWN_RUN_MAX_WAKES, then a person
is asked. An agent that ended its turn (`gt done --status escalated|deferred`) is not woken
while that notice is open."""

from django.conf import settings
from django.db import transaction

from convoys.models import Leg
from convoys.selectors import rigs_current_legs
from notifications.models import Notification
from rigs.models import Rig
from runner import services, tasks
from runner.models import AgentRun
from runner.rules import (
    WAKE_REQUESTER,
    WAKING,
    agent_launchable,
    leg_needs_agent,
    notice_wakes,
    turn_ended,
)


def rigs_wake_later(*, notifications: list[Notification]) -> None:
    """Rigs just told to act get their idle agent launched, after the commit and in a task (a
    cascade tells a hundred rigs in one transaction)."""
    rig_ids = sorted({n.rig_id for n in notifications if notice_wakes(n.kind, n.severity)})
    if rig_ids:
        transaction.on_commit(lambda: tasks.agent_runs_wake.delay(rig_ids))


def agent_runs_wake(*, rig_ids: list[int]) -> list[int]:
    """Launch the idle agents of these rigs, told to act (an interface they use changed,
    their merge conflicted...), so that someone acts on it. Left alone: a rig whose agent is
    running (it reads its inbox), has no command, or has no leg that needs it; and one whose
    notifications were acknowledged meanwhile. Returns the rigs whose agent was launched."""
    busy = AgentRun.objects.filter(rig_id__in=rig_ids, state__in=AgentRun.ACTIVE_STATES)
    idle = set(rig_ids) - set(busy.values_list("rig_id", flat=True))
    legs = {rig_id: leg for rig_id, leg in rigs_current_legs(idle).items() if leg_needs_agent(leg)}
    pending = (
        Notification.objects.filter(WAKING, rig_id__in=legs, state=Notification.State.OPEN)
        .order_by("rig_id", "-id")
        .values_list("rig_id", "summary")
    )
    told: dict[int, list[str]] = {}
    for rig_id, summary in pending:
        told.setdefault(rig_id, []).append(summary)
    woken = []
    for rig in Rig.objects.filter(pk__in=told).select_related("agent").order_by("id"):
        if not agent_launchable(rig.agent):
            continue
        leg, summaries = legs[rig.id], told[rig.id]
        if turn_ended(rig.id, leg.id) is not None:
            continue  # its agent ended its turn: a person answers or launches it
        if _wakes_used_up(rig, leg):
            continue
        reason = f"woken by {len(summaries)} unacknowledged notification(s): {summaries[0]}"
        if services.agent_run_launch_for_leg(
            rig=rig, leg=leg, requested_by=WAKE_REQUESTER, reason=reason
        ):
            woken.append(rig.id)
    return woken


def _wakes_used_up(rig: Rig, leg: Leg) -> bool:
    """An agent woken GASTOWN_RUN_MAX_WAKES times for its leg since anyone else launched it is
    not woken again (an agent that cannot get past a failing gate would otherwise be launched
    for every failure, for ever); a person is asked instead, once. 0: never woken."""
    if settings.GASTOWN_RUN_MAX_WAKES <= 0:
        return True
    runs = list(
        AgentRun.objects.filter(rig=rig, leg=leg)
        .exclude(requested_by="runner")  # restarts belong to the launch they restart
        .order_by("-id")
        .values_list("id", "requested_by")[: settings.GASTOWN_RUN_MAX_WAKES + 1]
    )
    wakes = 0
    for _, requested_by in runs:
        if requested_by != WAKE_REQUESTER:
            break  # a person's or the convoy's launch starts the count again
        wakes += 1
    if wakes < settings.GASTOWN_RUN_MAX_WAKES:
        return False
    last = AgentRun.objects.select_related("agent", "rig").get(pk=runs[0][0])
    if last.escalated_at is None:
        why = f"it was woken {wakes} time(s) for leg {leg.key} and the leg is still not done"
        services.agent_run_escalate(run=last, why=why)
    return True
