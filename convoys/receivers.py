"""Listens to the rigs' domain signals; each receiver is one call to a named service in
`convoys.services.follow`. Signals arrive inside the transaction that made the change, so what
is done here commits or rolls back with it. (The rigs append their own events; the cascades to
other rigs are `cascades.receivers`', connected after these.)
"""

from django.dispatch import receiver

from convoys import services
from rigs import signals


@receiver(signals.rig_state_changed)
def on_rig_state_changed(sender, rig, old_state, new_state, **kwargs) -> None:
    services.convoys_follow_rig_state(rig=rig, old_state=old_state, new_state=new_state)


@receiver(signals.merge_request_state_changed)
def on_merge_request_state_changed(sender, merge_request, new_state, **kwargs) -> None:
    services.convoys_follow_merge_request(merge_request=merge_request, new_state=new_state)


@receiver(signals.merge_landed)
def on_merge_landed(sender, merge_requests, repository, target_branch, **kwargs) -> None:
    services.convoys_follow_merge_landed(
        merge_requests=merge_requests, repository=repository, target_branch=target_branch
    )


@receiver(signals.rig_heartbeat)
def on_rig_heartbeat(sender, rig, at, **kwargs) -> None:
    if rig.agent_id:
        services.bead_leases_renew(agent=rig.agent, rig=rig, now=at)
