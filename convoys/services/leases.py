"""Claims are leases.

A claim (`bead_claim`) records its holder: the agent, and the agent's live run in the bead's
rig when it has one (`claimed_by_run_id`: an id, since runner sits above convoys; the runner
answers "which run" through `CLAIM_RUN_FINDERS`). It holds until `lease_expires_at`
(`GASTOWN_CLAIM_LEASE_SECONDS` after the claim or the last renewal). Renewed by the holder's
heartbeat (`POST rigs/{id}/heartbeat/`, through the `rigs.signals.rig_heartbeat` signal) and by
its run's output (the supervisor's liveness). It ends, the bead open again with no assignee
and a note on it, when:

- the lease lapses: the periodic sweep (`bead_leases_expire`, by beat), or a claim of the bead
  by someone else, which wins over a lapsed lease (`bead_claim`: the lapse is in its UPDATE's
  WHERE, and `bead_claim_lapse_record` writes the note);
- its run ends without closing it (`bead_claims_end_for_run`, from the runner).

Exactly one holder at any time: every step is one conditional UPDATE checked by row count
(DESIGN rule 6). A renewal is `WHERE assignee = me [run = mine] AND status = in_progress AND
lease >= now`, a lapse `WHERE status = in_progress AND lease < now`: on the same row one
excludes the other, and PostgreSQL re-checks a waiting UPDATE's WHERE on the row the other one
committed, so a lapse and a renewal (or a claim taking over) cannot both win.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from common.clock import db_now
from convoys.models import Bead, BeadComment, Convoy, Leg
from convoys.services.bead_graph import bead_event
from rigs.models import Agent, Rig

IN_PROGRESS, OPEN = Bead.Status.IN_PROGRESS, Bead.Status.OPEN
NOTE_AUTHOR = "gastown"  # the author of the notes the server writes on beads
SWEEP_BATCH = 500  # lapsed claims returned per sweep (the next sweep takes the rest)

# Which of an agent's runs holds the claims it makes in a rig: (agent id, rig id) -> run id or
# None. The runner registers its answer when it loads (RunnerConfig.ready); convoys cannot read
# AgentRun itself (the layers). Without a runner, claims are held by the agent alone.
CLAIM_RUN_FINDERS: list[Callable[[int, int], int | None]] = []


def claim_run_id(agent_id: int, rig_id: int | None) -> int | None:
    """The run that holds a claim `agent_id` makes in `rig_id` (None: the agent itself)."""
    if rig_id is None:
        return None
    for find in CLAIM_RUN_FINDERS:
        if (run_id := find(agent_id, rig_id)) is not None:
            return run_id
    return None


def lease_seconds() -> int:
    return settings.GASTOWN_CLAIM_LEASE_SECONDS


def lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=lease_seconds())


def lease_lapsed(now: datetime) -> Q:
    """The row's own condition for a claim whose lease has lapsed (a claim may take it)."""
    return Q(status=IN_PROGRESS, lease_expires_at__lt=now)


def lease_fields(bead: Bead, to: str, now: datetime) -> dict[str, Any]:
    """What a status change does to the lease: a bead that starts with an assignee gets one,
    a bead that stops being in progress loses it."""
    if to == IN_PROGRESS and bead.status != IN_PROGRESS and bead.assignee_id:
        return {
            "lease_expires_at": lease_until(now),
            "claimed_by_run_id": claim_run_id(bead.assignee_id, bead.rig_id),
        }
    if bead.status == IN_PROGRESS and to != IN_PROGRESS:
        return {"lease_expires_at": None, "claimed_by_run_id": None}
    return {}


@transaction.atomic
def bead_leases_renew(
    *,
    agent: Agent | None = None,
    rig: Rig | None = None,
    run_id: int | None = None,
    bead: Bead | None = None,
    now: datetime | None = None,
    min_gain_seconds: float = 0,
) -> int:
    """Renew the leases of claims their holder still holds: the agent's (in `rig`, or in a pool
    with no rig), or the run's. A lapsed lease is not renewed: it may already be someone
    else's (claim it again). One conditional UPDATE; its rows are locked in id order (a run's
    end returns its claims in the same order, so the two never deadlock). `min_gain_seconds`
    skips leases that would gain less (the run's output renews every few seconds). Returns how
    many were renewed."""
    if agent is None and run_id is None:
        raise ValueError("a lease is renewed by its holder: give the agent or the run.")
    now = now or timezone.now()
    until = lease_until(now)
    held = Bead.objects.filter(status=IN_PROGRESS, lease_expires_at__gte=now)
    if agent is not None:
        held = held.filter(assignee=agent)
    if run_id is not None:
        held = held.filter(claimed_by_run_id=run_id)
    if rig is not None:  # its own claims, and its pool claims on the same repository
        # a subquery, not a join: FOR UPDATE cannot lock the nullable side of an outer join
        convoys = Convoy.objects.filter(repository_id=rig.repository_id).values("pk")
        pool = Q(rig__isnull=True) & (Q(repository_id=rig.repository_id) | Q(convoy_id__in=convoys))
        held = held.filter(Q(rig=rig) | pool)
    if bead is not None:
        held = held.filter(pk=bead.pk)
    if min_gain_seconds:
        held = held.filter(lease_expires_at__lt=until - timedelta(seconds=min_gain_seconds))
    locked = held.order_by("pk").select_for_update().values("pk")
    return held.filter(pk__in=locked).update(lease_expires_at=until)


# --- a claim ends without its bead closed ---------------------------------------------------


def claim_end_values(bead: Bead, now: datetime) -> dict[str, Any]:
    """The row after its claim ends without the bead closed (a lapse, its run's end; a release
    may use it too): open, nobody's, no lease; back in its pool when the claim took it from one
    (its leg kept only when it was not the claimant's rig's)."""
    values: dict[str, Any] = {
        "status": OPEN,
        "assignee": None,
        "claimed_at": None,
        "lease_expires_at": None,
        "claimed_by_run_id": None,
        "updated_at": now,
    }
    if bead.claimed_from_pool and bead.rig_id is not None:
        values.update(rig=None, claimed_from_pool=False)
        if bead.convoy_id is None:  # a repository's pool
            values["repository_id"] = bead.rig.repository_id
        if bead.leg_id and Leg.objects.filter(pk=bead.leg_id, rig_id=bead.rig_id).exists():
            values["leg"] = None
    return values


def _note_text(
    holder: str, run_id: int | None, reason: str, to_pool: bool, taken_by: Agent | None = None
) -> str:
    by = f"{holder} (run {run_id})" if run_id else holder
    if taken_by is not None:
        return f"Claim by {by} ended: {reason}. {taken_by.name} claimed the bead."
    where = "back in its pool" if to_pool else "open again"
    return f"Claim by {by} ended: {reason}. The bead is {where}; claim it to go on."


def bead_claim_lapse_record(
    bead: Bead,
    *,
    holder: Agent | None,
    run_id: int | None,
    cause: str,
    reason: str,
    to_pool: bool = False,
    taken_by: Agent | None = None,
) -> BeadComment:
    """The note on the bead (a comment by `gastown`) and the `bead.claim_lapsed` event, in the
    transaction that ended the claim (the event goes to the groups of `bead` as given: the
    sweep and a run's end pass it as it was held, in its rig)."""
    name = holder.name if holder is not None else "nobody"
    comment = BeadComment.objects.create(
        bead=bead, author=NOTE_AUTHOR, text=_note_text(name, run_id, reason, to_pool, taken_by)
    )
    bead_event(
        "bead.claim_lapsed",
        bead,
        {
            "bead": bead.short_id,
            "title": bead.title,
            "agent": holder.name if holder is not None else None,
            "run": run_id,
            "cause": cause,
            "reason": reason,
            "from": IN_PROGRESS,
            "to": OPEN,
            "to_pool": to_pool,
            "taken_by": taken_by.name if taken_by is not None else None,
            "comment": comment.pk,
        },
    )
    return comment


def _claim_end(bead_id: int, *, still: Q, cause: str, reason: Callable[[Bead], str]) -> Bead | None:
    """End one claim if `still` holds on its row: the row is locked, then one conditional
    UPDATE (checked by row count) makes it open; the note and the event follow. None when the
    claim is not there any more (closed, renewed, taken meanwhile)."""
    now = timezone.now()
    held = Bead.objects.filter(still, pk=bead_id, status=IN_PROGRESS)
    bead = held.select_for_update().first()
    if bead is None:
        return None
    holder = Agent.objects.filter(pk=bead.assignee_id).first() if bead.assignee_id else None
    run_id, why = bead.claimed_by_run_id, reason(bead)
    values = claim_end_values(bead, now)
    if held.update(**values) != 1:
        return None
    bead_claim_lapse_record(
        bead, holder=holder, run_id=run_id, cause=cause, reason=why, to_pool="rig" in values
    )
    for name, value in values.items():
        setattr(bead, name, value)
    return bead


def bead_leases_expire(*, now: datetime | None = None) -> list[Bead]:
    """Periodic (beat, every 30 s): claims whose lease lapsed go back to open, each in its own
    transaction (a renewal or a claim that wins the race meanwhile leaves it alone)."""
    now = now or db_now()  # the database's clock: a worker's jumped clock lapses nothing
    lapsed = (
        Bead.objects.filter(lease_lapsed(now))
        .order_by("lease_expires_at", "pk")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )

    def why(bead: Bead) -> str:
        return (
            f"no heartbeat for {lease_seconds()} s (its lease lapsed at "
            f"{bead.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC)"
        )

    returned = []
    for bead_id in list(lapsed):
        with transaction.atomic():
            bead = _claim_end(bead_id, still=Q(lease_expires_at__lt=now), cause="lease", reason=why)
        if bead is not None:
            returned.append(bead)
    return returned


@transaction.atomic
def bead_claims_end_for_run(*, run_id: int, reason: str) -> list[Bead]:
    """A run ended: the beads it still holds (claimed, not closed) go back to open, with a note
    saying how it ended (`reason`). Called by the runner in the transaction that ends the run;
    the run's beads are locked in id order first (as renewals lock them)."""
    ids = list(
        Bead.objects.filter(claimed_by_run_id=run_id, status=IN_PROGRESS)
        .order_by("pk")
        .select_for_update()
        .values_list("pk", flat=True)
    )
    returned = []
    for bead_id in ids:
        bead = _claim_end(
            bead_id,
            still=Q(claimed_by_run_id=run_id),
            cause="run_ended",
            reason=lambda bead: reason,
        )
        if bead is not None:
            returned.append(bead)
    return returned
