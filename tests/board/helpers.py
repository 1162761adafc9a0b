"""Building board data quickly (no git work): convoys with legs on rigs, in bulk."""

import itertools

from django.utils import timezone

from convoys.models import Convoy, Leg, LegDependency
from notifications.models import Notification
from rigs.models import Agent, Repository, Rig

_seq = itertools.count(1)


def bulk_convoys(
    repository: Repository,
    states: dict[str, int],
    legs_per_convoy: int = 5,
    agent: Agent | None = None,
) -> list[Convoy]:
    """`states` maps a convoy state to how many convoys to make in it. Each leg has its own rig
    (working, or failed for a blocked convoy's first leg), legs depend on the previous one, and
    every rig has one unacked notification. A handful of bulk inserts."""
    now = timezone.now()
    convoys = []
    for state, count in states.items():
        for _ in range(count):
            n = next(_seq)
            convoys.append(
                Convoy(
                    slug=f"bulk-{n}",
                    title=f"Bulk convoy {n}",
                    repository=repository,
                    target_branch=repository.target_branch,
                    state=state,
                    launched_at=now if state != Convoy.State.DRAFT else None,
                )
            )
    convoys = Convoy.objects.bulk_create(convoys)
    rigs = []
    for convoy in convoys:
        for i in range(legs_per_convoy):
            failed = convoy.state == Convoy.State.BLOCKED and i == 0
            rigs.append(
                Rig(
                    repository=repository,
                    slug=f"{convoy.slug}-{i}",
                    branch=f"rig/{convoy.slug}-{i}",
                    agent=agent,
                    state=Rig.State.FAILED if failed else Rig.State.WORKING,
                )
            )
    rigs = Rig.objects.bulk_create(rigs)
    leg_state = {
        Convoy.State.DRAFT: Leg.State.PENDING,
        Convoy.State.LAUNCHED: Leg.State.WORKING,
        Convoy.State.BLOCKED: Leg.State.READY,
        Convoy.State.LANDING: Leg.State.MERGING,
        Convoy.State.LANDED: Leg.State.LANDED,
        Convoy.State.CANCELLED: Leg.State.CANCELLED,
    }
    legs = []
    rig_iter = iter(rigs)
    for convoy in convoys:
        for i in range(legs_per_convoy):
            legs.append(
                Leg(
                    convoy=convoy,
                    key=f"leg-{i}",
                    title=f"Leg {i}",
                    rig=next(rig_iter),
                    state=leg_state[convoy.state] if i == 0 else Leg.State.PENDING,
                    position=i,
                )
            )
    legs = Leg.objects.bulk_create(legs)
    LegDependency.objects.bulk_create(
        LegDependency(leg=leg, depends_on=prev)
        for prev, leg in itertools.pairwise(legs)
        if prev.convoy_id == leg.convoy_id
    )
    Notification.objects.bulk_create(
        Notification(rig=rig, kind=Notification.Kind.INFO, summary="hi", fingerprint=f"fp-{rig.id}")
        for rig in rigs
    )
    return convoys
