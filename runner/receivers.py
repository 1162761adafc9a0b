"""Launches an agent when a convoy hands its rig a leg or its rig is told to act while it is
idle, and starts queued runs when their rig becomes ready (signals arrive inside the
transaction that made the change)."""

from django.db import transaction
from django.dispatch import receiver

from convoys.signals import convoy_cancelled, leg_dispatched, notifications_created
from rigs.models import Rig
from rigs.signals import rig_state_changed
from runner import services
from runner.models import AgentRun


@receiver(leg_dispatched)
def on_leg_dispatched(sender, leg, rig, **kwargs) -> None:
    if not services.agent_launchable(rig.agent):
        return
    if AgentRun.objects.filter(rig=rig, state__in=AgentRun.ACTIVE_STATES).exists():
        return  # the running agent reads the "assigned"/"unblocked" notification itself
    services.agent_run_launch_for_leg(
        rig=rig,
        leg=leg,
        requested_by=f"convoy:{leg.convoy.slug}",
        reason=f"leg {leg.key} of convoy '{leg.convoy.title}' handed to rig {rig.slug}",
    )


@receiver(notifications_created)
def on_notifications_created(sender, notifications, **kwargs) -> None:
    """A rig told to act whose agent is idle gets it launched (after the commit, in a task:
    a cascade tells a hundred rigs in one transaction)."""
    rig_ids = sorted({n.rig_id for n in notifications if n.kind in services.WAKE_KINDS})
    if rig_ids:
        transaction.on_commit(lambda: services.wake_soon(rig_ids))


@receiver(rig_state_changed)
def on_rig_state_changed(sender, rig, old_state, new_state, **kwargs) -> None:
    provisioned = new_state == Rig.State.READY and old_state == Rig.State.PROVISIONING
    if provisioned and AgentRun.objects.filter(rig=rig, state=AgentRun.State.QUEUED).exists():
        transaction.on_commit(services.dispatch_soon)


@receiver(convoy_cancelled)
def on_convoy_cancelled(sender, convoy, **kwargs) -> None:
    """A cancelled convoy's agents stop: queued runs are cancelled, live ones terminated."""
    runs = AgentRun.objects.filter(convoy=convoy, state__in=AgentRun.ACTIVE_STATES)
    for run in runs.select_related("agent", "rig"):
        services.agent_run_stop(run=run, requested_by=f"convoy {convoy.slug} cancelled")
