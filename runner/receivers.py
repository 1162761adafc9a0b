"""Launches an agent when a convoy hands its rig a leg, and starts queued runs when their rig
becomes ready (signals arrive inside the transaction that made the change)."""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.dispatch import receiver

from convoys.events import event_append
from convoys.signals import convoy_cancelled, leg_dispatched
from rigs.models import Rig
from rigs.signals import rig_state_changed
from runner import services
from runner.models import AgentRun

logger = logging.getLogger(__name__)


@receiver(leg_dispatched)
def on_leg_dispatched(sender, leg, rig, **kwargs) -> None:
    agent = rig.agent
    # An agent without a runtime command calls in by itself: nothing to launch.
    if agent is None or not agent.is_active or not services.agent_runtime_command(agent):
        return
    if AgentRun.objects.filter(rig=rig, state__in=AgentRun.ACTIVE_STATES).exists():
        return  # the running agent reads the "assigned"/"unblocked" notification itself
    try:
        services.agent_run_request(
            rig=rig,
            leg=leg,
            requested_by=f"convoy:{leg.convoy.slug}",
            reason=f"leg {leg.key} of convoy '{leg.convoy.title}' handed to rig {rig.slug}",
        )
    except (ValidationError, services.RunConflict) as exc:
        # e.g. the convoy's budget is spent: the dispatch stands and the convoy says why
        why = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        logger.warning("no agent launched for leg %s: %s", leg.pk, why)
        event_append(
            "run.refused",
            {"rig": rig.id, "leg": leg.key, "agent": agent.name, "reason": why},
            repository_id=rig.repository_id,
            convoy_id=leg.convoy_id,
            rig_id=rig.id,
        )


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
