"""What other apps' signals ask of the runner, each a call to a named service (signals arrive
inside the transaction that made the change): launch an agent when a convoy hands its rig a
leg, wake an idle agent whose rig is told to act, start queued runs when their rig becomes
ready, stop a cancelled convoy's agents."""

from django.dispatch import receiver

from convoys.signals import convoy_cancelled, leg_dispatched
from notifications.signals import notifications_created
from rigs.signals import rig_state_changed
from runner import services, wakes


@receiver(leg_dispatched)
def on_leg_dispatched(sender, leg, rig, **kwargs) -> None:
    services.agent_run_launch_for_handed_leg(leg=leg, rig=rig)


@receiver(notifications_created)
def on_notifications_created(sender, notifications, **kwargs) -> None:
    wakes.rigs_wake_later(notifications=notifications)


@receiver(rig_state_changed)
def on_rig_state_changed(sender, rig, old_state, new_state, **kwargs) -> None:
    services.agent_runs_dispatch_when_provisioned(rig=rig, old_state=old_state, new_state=new_state)


@receiver(convoy_cancelled)
def on_convoy_cancelled(sender, convoy, **kwargs) -> None:
    services.convoy_runs_stop(convoy=convoy)
