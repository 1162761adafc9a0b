"""Who a cascade tells: the one rule, used by every trigger (a landing, a branch that moved, an
overlap, a follow-up).

A cascade tells live rigs with work still to do. A rig that finished is told nothing: merged,
archived or failed rigs, and rigs whose leg has landed or whose convoy has ended. The exception
is a merged rig that was handed a new leg (its current leg is open): it has work again. A rig
that never had a leg (a rig an agent asked for by itself) is told while it is live and not
merged."""

from collections.abc import Iterable

from convoys.models import Leg
from convoys.selectors import rigs_current_legs, rigs_finished_work
from rigs.models import Rig

S = Rig.State
# At work, or about to be: a rig in these states whose work is not finished is told; a merged
# rig only when it was handed a new leg.
WORK_STATES = (S.READY, S.WORKING, S.STALLED, S.MERGING)


def cascade_audience(
    *, repository_id: int, exclude: Iterable[int] = (), rig_ids: Iterable[int] | None = None
) -> list[tuple[Rig, Leg | None]]:
    """The rigs of a repository a cascade may tell, with their current legs, by id (at most
    five queries). `rig_ids` narrows it to those rigs; `exclude` leaves out the rigs that caused
    it. Finished is `convoys.selectors.rigs_finished_work`'s rule (the one the merge requests,
    the briefing and the runner use)."""
    rigs = Rig.objects.filter(repository_id=repository_id, state__in=(*WORK_STATES, S.MERGED))
    if rig_ids is not None:
        rigs = rigs.filter(id__in=list(rig_ids))
    rigs = list(rigs.exclude(id__in=list(exclude)).select_related("repository").order_by("id"))
    if not rigs:
        return []
    legs = rigs_current_legs([rig.id for rig in rigs])
    finished = rigs_finished_work(rigs, legs)
    return [
        (rig, legs.get(rig.id))
        for rig in rigs
        if rig.id not in finished and (rig.state != S.MERGED or rig.id in legs)
    ]


def rig_in_audience(rig: Rig) -> tuple[bool, Leg | None]:
    """`cascade_audience` for one rig: (whether a cascade may tell it, its current leg)."""
    found = cascade_audience(repository_id=rig.repository_id, rig_ids=[rig.id])
    return (True, found[0][1]) if found else (False, None)
