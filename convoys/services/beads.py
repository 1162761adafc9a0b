"""Beads: create (with the edges it comes with), edit, claim (atomic), status changes that
dispatch the work they unblock to its rigs right away. The graph (dependencies, cycles, the
unblocking check) is in `convoys.services.bead_graph`."""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from common.errors import Refusal
from common.statemachine import transition
from convoys.beads import bead_short_id_new
from convoys.models import Bead, BeadComment, Convoy, Leg
from convoys.selectors import (
    ENDED_CONVOY_STATES,
    FINISHED_LEG_STATES,
    FinishedWork,
    bead_explain,
    beads_ready,
    legs_finished,
    rig_current_leg,
    rig_finished_work,
)
from convoys.services.bead_graph import (
    _downstream,
    _with_unblocking,
    bead_dependency_add,
    bead_event,
)
from convoys.services.leases import (
    bead_claim_lapse_record,
    bead_leases_renew,
    claim_run_id,
    lease_fields,
    lease_lapsed,
    lease_seconds,
    lease_until,
)
from rigs.models import Agent, MergeRequest, Repository, Rig


class ClaimConflict(Refusal):
    """Someone else holds the bead (`claimed`), or it cannot be claimed now (`not_ready`)."""

    def __init__(self, message: str, *, bead: Bead, holder: Agent | None = None) -> None:
        if holder is not None:
            super().__init__(message, code="claimed", field="assignee")
        else:
            super().__init__(message, code="not_ready", field="status")
        self.bead = bead
        self.holder = holder


class BeadWorkFinished(Refusal):
    """The bead's leg has landed (or was cancelled), or its convoy has ended: its work is
    finished, so it cannot be claimed."""

    code = "work_finished"
    field = "leg"


class NoRigHere(Refusal):
    """A pool bead claimed by an agent with no live rig on the pool's repository: it could not
    work on it, and claiming would let any agent squat on any repository's work."""

    code = "no_rig"
    field = "agent"
    status = 403


def _bead_finished_text(bead: Bead) -> str:
    """Why the bead's work is over ('' when it is not): its leg or convoy ended, or it sits in
    a rig whose work is finished."""
    if text := _finished_text(bead):
        return text
    if bead.rig_id and bead.leg_id is None:
        finished = rig_finished_work(bead.rig, rig_current_leg(bead.rig))
        if finished is not None:
            return f"rig {bead.rig.slug}'s {finished.text()}"
    return ""


def _finished_text(bead: Bead) -> str:
    """Why the bead's work is finished ('' when it is not), for a lost claim."""
    leg = bead.leg
    if leg is not None and (
        leg.state in FINISHED_LEG_STATES or leg.convoy.state in ENDED_CONVOY_STATES
    ):
        return FinishedWork(leg, leg.landed_merge_request).text()
    if bead.convoy is not None and bead.convoy.state in ENDED_CONVOY_STATES:
        return f"its convoy '{bead.convoy.title}' is {bead.convoy.state}"
    return ""


@transaction.atomic
def bead_create(
    *,
    title: str,
    rig: Rig | None = None,
    leg: Leg | None = None,
    convoy: Convoy | None = None,
    repository: Repository | None = None,
    description: str = "",
    acceptance_criteria: str = "",
    priority: int = 2,
    type: str = Bead.Type.TASK,
    assignee: Agent | None = None,
    labels: Iterable[str] = (),
    defer_until: datetime | None = None,
    discovered_from_merge_request: MergeRequest | None = None,
    blocks: Iterable[Bead] = (),
    discovered_from: Bead | None = None,
) -> Bead:
    """A new open bead in a rig, on a leg (in its rig, or the convoy's pool before launch), or
    waiting in a convoy's or a repository's pool (no rig). With the edges it comes with, in the
    same transaction: the `blocks` beads depend on it; it was `discovered_from` that bead. A
    bead made in a rig with no leg given belongs to the rig's current leg (if it has one), so
    that the leg's open work and its end are the bead's too."""
    errors: dict[str, str] = {}
    if leg is None and rig is not None and convoy is None:
        leg = rig_current_leg(rig)
        if leg is None and (finished := rig_finished_work(rig, None)) is not None:
            raise BeadWorkFinished(
                f"rig {rig.slug} takes no new work: {finished.text()}. Its work is finished."
            )
    if leg is not None:
        if rig is not None and leg.rig_id and rig.pk != leg.rig_id:
            errors["rig"] = f"leg {leg.key} belongs to another rig."
        if convoy is not None and convoy.pk != leg.convoy_id:
            errors["convoy"] = f"leg {leg.key} belongs to another convoy."
        rig = rig or leg.rig
        convoy = None if rig is not None else leg.convoy
    if rig is not None:
        if repository is not None and repository.pk != rig.repository_id:
            errors["repository"] = f"rig {rig.slug} works on another repository."
        repository = None  # the rig says where it lives
    elif convoy is not None:
        if repository is not None and repository.pk != convoy.repository_id:
            errors["repository"] = "the convoy works on another repository."
        repository = None
    elif repository is None:
        errors["rig"] = "a bead needs a rig, a leg, or a pool (a convoy or a repository)."
    labels = list(labels)
    if not all(isinstance(label, str) and label.strip() for label in labels):
        errors["labels"] = "labels must be non-empty strings."
    if errors:
        raise ValidationError(errors)
    bead = Bead(
        title=(title or "").strip(),
        rig=rig,
        leg=leg,
        convoy=convoy,
        repository=repository,
        description=description,
        acceptance_criteria=acceptance_criteria,
        priority=priority,
        type=type,
        assignee=assignee,
        labels=labels,
        defer_until=defer_until,
        discovered_from_merge_request=discovered_from_merge_request,
    )
    bead.full_clean(exclude=["short_id"], validate_unique=False)
    for attempt in range(5):  # two creators may draw the same random id: draw again
        bead.short_id = bead_short_id_new()
        try:
            with transaction.atomic():
                bead.save(force_insert=True)
            break
        except IntegrityError:
            if attempt == 4:
                raise
    bead_event(
        "bead.created",
        bead,
        {"bead": bead.short_id, "title": bead.title, "priority": bead.priority},
    )
    for other in blocks:
        bead_dependency_add(bead=other, depends_on=bead, type="blocks")
    if discovered_from is not None:
        bead_dependency_add(bead=bead, depends_on=discovered_from, type="discovered-from")
    return bead


def _bead_move(bead: Bead, to: str, **fields) -> list[Bead]:
    old = bead.status
    fields = {**lease_fields(bead, to, timezone.now()), **fields}

    def change() -> None:
        transition(bead, to, **fields)
        bead_event(
            "bead.status", bead, {"bead": bead.short_id, "title": bead.title, "from": old, "to": to}
        )

    return _with_unblocking(_downstream({bead.pk}, include_start=False), change, bead)


@transaction.atomic
def bead_transition(*, bead: Bead, to: str, **fields) -> Bead:
    """Move a bead's status; beads this makes ready are dispatched to their rigs."""
    _bead_move(bead, to, **fields)
    return bead


@transaction.atomic
def bead_update(*, bead: Bead, values: dict[str, Any]) -> Bead:
    """Edit a bead's plain fields (title, description, priority, labels, defer_until...), with
    an event. A changed `defer_until` may make beads ready, or not: it goes through the
    unblocking check like a status change."""

    def change() -> None:
        for name, value in values.items():
            setattr(bead, name, value)
        bead.full_clean(exclude=["short_id"], validate_unique=False)
        bead.save(update_fields=[*values, "updated_at"])
        bead_event(
            "bead.updated",
            bead,
            {"bead": bead.short_id, "title": bead.title, "fields": sorted(values)},
        )

    if "defer_until" in values and values["defer_until"] != bead.defer_until:
        _with_unblocking(_downstream({bead.pk}, include_start=True), change, bead)
    else:
        change()
    return bead


@transaction.atomic
def bead_close(*, bead: Bead, reason: str = "") -> tuple[Bead, list[Bead]]:
    """Close a bead. Returns it and the beads it unblocked (their rigs are told right away)."""
    unblocked = _bead_move(bead, Bead.Status.CLOSED, close_reason=reason, closed_at=timezone.now())
    return bead, unblocked


@transaction.atomic
def bead_reopen(*, bead: Bead) -> Bead:
    return bead_transition(bead=bead, to=Bead.Status.OPEN, close_reason="", closed_at=None)


@transaction.atomic
def bead_edit(
    *,
    bead: Bead,
    values: dict[str, Any],
    status: str | None = None,
    close_reason: str = "",
    by: Agent | str = "",
) -> Bead:
    """PATCH of a bead: its plain fields (`bead_update`), then a status change through the
    state machine: closing (`bead_close`, dispatching what it unblocks), reopening a closed
    bead, or another transition; `in_progress` is reached by claiming only. The reason of a
    change that is not a close (blocked, deferred, reopened) is kept as a comment by `by`."""
    if values:
        bead_update(bead=bead, values=values)
    if status is None or status == bead.status:
        return bead
    if status == Bead.Status.IN_PROGRESS:
        raise ValidationError(
            {"status": f"claim it to start it (`gt claim {bead.short_id}`, or POST "
             f"/api/v1/beads/{bead.short_id}/claim/)."}
        )  # fmt: skip
    if status != Bead.Status.CLOSED and (finished := _bead_finished_text(bead)):
        raise BeadWorkFinished(  # closing a leftover is fine; reviving it is not
            f"{bead.short_id} cannot be {status.replace('_', ' ')}: {finished}. Its work is "
            "finished."
        )
    before = bead.status
    if status == Bead.Status.CLOSED:
        bead_close(bead=bead, reason=close_reason)
    elif bead.status == Bead.Status.CLOSED and status == Bead.Status.OPEN:
        bead_reopen(bead=bead)
    else:
        bead_transition(bead=bead, to=status)
    if status != Bead.Status.CLOSED and close_reason.strip():
        agent = by if isinstance(by, Agent) else None
        BeadComment.objects.create(
            bead=bead,
            author_agent=agent,
            author=agent.name if agent is not None else (by or "someone"),
            text=f"{before} → {status}: {close_reason.strip()}",
        )
    return bead


def _claim_rig(bead: Bead, agent: Agent) -> tuple[Rig | None, Leg | None]:
    """For a pool bead: the claiming agent's live rig on the pool's repository (preferring
    its rig on the pool's convoy) and that rig's leg in the convoy. A pool bead that another
    agent's claim took into its rig (`claimed_from_pool`) is still a pool bead to others."""
    taken = bead.rig_id is not None and bead.claimed_from_pool and bead.rig.agent_id != agent.pk
    if bead.rig_id is not None and not taken:
        return None, None
    convoy = bead.convoy
    repository_id = (
        bead.repository_id
        or (convoy.repository_id if convoy else None)
        or (bead.rig.repository_id if taken else None)
    )
    rigs = Rig.objects.filter(
        agent=agent, repository_id=repository_id, state__in=Rig.LIVE_STATES
    ).order_by("-created_at")
    legs = (
        {
            leg.rig_id: leg
            for leg in Leg.objects.filter(convoy=convoy, rig__in=rigs, state__in=Leg.OPEN_STATES)
        }
        if convoy
        else {}
    )
    rigs = list(rigs)
    if not rigs:
        # a rig still being set up there: the claim waits in the pool
        if (
            Rig.objects.filter(agent=agent, repository_id=repository_id)
            .exclude(state__in=(Rig.State.ARCHIVED, Rig.State.FAILED))
            .exists()
        ):
            return None, None
        raise NoRigHere(
            f"{bead.short_id} is pool work of a repository where agent {agent.name} has no live "
            "rig: request a rig there first (POST rigs/), then claim it."
        )
    rig = next((r for r in rigs if r.pk in legs), rigs[0])
    own_leg = bead.leg if bead.leg_id and not (taken and bead.leg.rig_id == bead.rig_id) else None
    return rig, legs.get(rig.pk) or own_leg


@transaction.atomic
def bead_claim(*, bead: Bead, agent: Agent) -> Bead:
    """Make `agent` the bead's assignee and start it (open → in_progress), with a lease.

    One conditional UPDATE (open and unassigned or assigned to this agent, or in progress with
    a lapsed lease; ready; not of a finished leg or an ended convoy) checked by row count: of N
    agents claiming at once exactly one wins; the others get ClaimConflict naming the holder.
    A claim that takes over a lapsed lease notes the lapse on the bead (`bead.claim_lapsed`).
    The claim holds until `lease_expires_at` unless renewed (`convoys.services.leases`), and
    names the agent's live run in the rig (`claimed_by_run_id`), whose end returns it.
    A bead whose leg landed (or was cancelled) or whose convoy ended is refused with
    BeadWorkFinished (409 `work_finished`). Claiming a bead you already hold renews its lease.
    A pool bead moves into the agent's live rig on that repository (it stays in the pool while
    that rig is being set up); an agent with no rig there is refused (NoRigHere, 403 `no_rig`).
    """
    if not agent.is_active:
        raise ValidationError({"agent": f"agent {agent.name} is deactivated."})
    now = timezone.now()
    if bead.rig_id and bead.leg_id is None:  # a leg's end is checked by the UPDATE below
        finished = rig_finished_work(bead.rig, rig_current_leg(bead.rig))
        if finished is not None:
            raise BeadWorkFinished(
                f"{bead.short_id} cannot be claimed: rig {bead.rig.slug}'s {finished.text()}. "
                "Its work is finished."
            )
    rig, leg = _claim_rig(bead, agent)
    # The row as it is, locked: who held it (a claim that takes over a lapsed lease says so).
    seen = (
        Bead.objects.select_for_update()
        .filter(pk=bead.pk)
        .values("status", "assignee_id", "claimed_by_run_id", "lease_expires_at", "rig_id")
        .first()
    ) or {"status": None, "assignee_id": None, "rig_id": bead.rig_id}
    values: dict[str, Any] = {
        "status": Bead.Status.IN_PROGRESS,
        "assignee": agent,
        "claimed_at": now,
        "updated_at": now,
        "lease_expires_at": lease_until(now),
        "claimed_by_run_id": claim_run_id(agent.pk, rig.pk if rig else seen["rig_id"]),
    }
    if rig is not None:
        values.update(rig=rig, leg=leg, repository=None, claimed_from_pool=True)
    won = (
        Bead.objects.filter(pk=bead.pk)
        # open and free (or already meant for this agent), or held on a lease that lapsed: the
        # lapse is the row's own condition, so a renewal that commits first makes this lose
        .filter(
            Q(status=Bead.Status.OPEN, assignee__isnull=True)
            | Q(status=Bead.Status.OPEN, assignee=agent)
            | lease_lapsed(now)
        )
        # the work of a landed or cancelled leg, or of an ended convoy, is finished. Subqueries,
        # not joins: a join would move the whole condition into a subquery of the UPDATE, and
        # the row's own conditions (status, assignee) must stay on the row that is updated.
        .exclude(Exists(legs_finished().filter(pk=OuterRef("leg_id"))))
        .exclude(
            Exists(Convoy.objects.filter(pk=OuterRef("convoy_id"), state__in=ENDED_CONVOY_STATES))
        )
        .filter(pk__in=beads_ready(ids=[bead.pk], now=now, lapsed_claims=True).values("pk"))
        .update(**values)
    )
    bead.refresh_from_db()
    if not won:
        holder = bead.assignee
        if holder == agent and bead.status == Bead.Status.IN_PROGRESS:
            if bead_leases_renew(agent=agent, bead=bead, now=now):  # already yours
                bead.refresh_from_db()
            return bead
        if finished := _finished_text(bead):
            raise BeadWorkFinished(
                f"{bead.short_id} cannot be claimed: {finished}. Its work is finished."
            )
        if holder is not None and holder != agent:
            lease = (
                f" (its lease runs until {bead.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC unless "
                "renewed)"
                if bead.status == Bead.Status.IN_PROGRESS and bead.lease_expires_at
                else ""
            )
            raise ClaimConflict(
                f"{bead.short_id} is already claimed by {holder.name}{lease}.",
                bead=bead,
                holder=holder,
            )
        reasons = bead_explain(bead, now=now) or [f"status is {bead.status}"]
        raise ClaimConflict(f"{bead.short_id} is not ready: {'; '.join(reasons)}.", bead=bead)
    previous = seen["status"] or Bead.Status.OPEN
    if previous == Bead.Status.IN_PROGRESS and seen["assignee_id"] != agent.pk:
        lapsed_at = seen["lease_expires_at"]
        bead_claim_lapse_record(
            bead,
            holder=Agent.objects.filter(pk=seen["assignee_id"]).first(),
            run_id=seen["claimed_by_run_id"],
            cause="lease",
            reason=f"no heartbeat for {lease_seconds()} s (its lease lapsed at "
            f"{lapsed_at:%Y-%m-%d %H:%M:%S} UTC)",
            taken_by=agent,
        )
    bead_event(
        "bead.claimed",
        bead,
        {
            "bead": bead.short_id,
            "title": bead.title,
            "agent": agent.name,
            "from": previous,
            "to": Bead.Status.IN_PROGRESS,
            "moved_to_rig": rig.pk if rig else None,
            "run": bead.claimed_by_run_id,
            "lease_expires_at": bead.lease_expires_at.isoformat(),
        },
    )
    return bead
