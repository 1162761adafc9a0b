"""Launches an agent when a convoy hands its rig a leg, and starts queued runs when their rig
becomes ready (signals arrive inside the transaction that made the change)."""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.dispatch import receiver

from convoys.signals import leg_dispatched
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
        # e.g. the convoy's budget is spent: the refusal is recorded, the dispatch stands
        logger.info("no agent launched for leg %s: %s", leg.pk, exc)


@receiver(rig_state_changed)
def on_rig_state_changed(sender, rig, old_state, new_state, **kwargs) -> None:
    provisioned = new_state == Rig.State.READY and old_state == Rig.State.PROVISIONING
    if provisioned and AgentRun.objects.filter(rig=rig, state=AgentRun.State.QUEUED).exists():
        transaction.on_commit(services.dispatch_soon)
