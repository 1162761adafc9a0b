"""Beads: create, dependencies (cycles refused), claim (atomic), status changes that dispatch the
work they unblock to its rigs right away."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from common.errors import Refusal
from common.statemachine import transition
from convoys.beads import bead_short_id_new
from convoys.models import Bead, BeadDependency, Convoy, Leg, Notification
from convoys.notifications import notification_send
from convoys.selectors import bead_explain, beads_ready
from events.services import event_append
from rigs.models import Agent, MergeRequest, Repository, Rig

Kind = Notification.Kind
Severity = Notification.Severity


class ClaimConflict(Refusal):
    """Someone else holds the bead (`claimed`), or it cannot be claimed now (`not_ready`)."""

    def __init__(self, message: str, *, bead: Bead, holder: Agent | None = None) -> None:
        if holder is not None:
            super().__init__(message, code="claimed", field="assignee")
        else:
            super().__init__(message, code="not_ready", field="status")
        self.bead = bead
        self.holder = holder


class DependencyCycle(Refusal):
    """The new dependency would close a cycle (named by short ids)."""

    code = "cycle"
    field = "depends_on"


BLOCKING_TYPES = tuple(str(t) for t in BeadDependency.BLOCKING_TYPES)


def _bead_convoy_id(bead: Bead) -> int | None:
    if bead.convoy_id:
        return bead.convoy_id
    if bead.leg_id:
        return Leg.objects.filter(pk=bead.leg_id).values_list("convoy_id", flat=True).first()
    return None


def _bead_repository_id(bead: Bead) -> int | None:
    if bead.repository_id:
        return bead.repository_id
    if bead.rig_id:
        return Rig.objects.filter(pk=bead.rig_id).values_list("repository_id", flat=True).first()
    if bead.convoy_id:
        return (
            Convoy.objects.filter(pk=bead.convoy_id).values_list("repository_id", flat=True).first()
        )
    return None


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
) -> Bead:
    """A new open bead in a rig, on a leg (in its rig, or the convoy's pool before launch), or
    waiting in a convoy's or a repository's pool (no rig)."""
    errors: dict[str, str] = {}
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
    event_append(
        "bead.created",
        {"bead": bead.short_id, "title": bead.title, "priority": bead.priority},
        repository_id=_bead_repository_id(bead),
        rig_id=bead.rig_id,
        convoy_id=_bead_convoy_id(bead),
    )
    return bead


def _downstream(start: set[int], *, include_start: bool) -> set[int]:
    """Beads whose readiness may change when `start` beads change: their direct blocking
    dependents (or `start` itself) and every parent-child descendant of those. One query per
    level of the hierarchy."""
    result = set(start) if include_start else set()
    if not include_start:
        result |= set(
            BeadDependency.objects.filter(
                depends_on_id__in=start, type__in=BLOCKING_TYPES
            ).values_list("bead_id", flat=True)
        )
    frontier = set(result)
    while frontier:
        children = (
            set(
                BeadDependency.objects.filter(
                    depends_on_id__in=frontier, type=BeadDependency.Type.PARENT_CHILD
                ).values_list("bead_id", flat=True)
            )
            - result
        )
        result |= children
        frontier = children
    return result


def _ready_among(ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(beads_ready(ids=ids).values_list("pk", flat=True))


def _beads_dispatch(beads: list[Bead], cause: Bead | None) -> None:
    """Tell each rig that owns newly ready beads (one notification per rig), and the board."""
    by_rig: dict[int | None, list[Bead]] = defaultdict(list)
    for bead in beads:
        by_rig[bead.rig_id].append(bead)
    by = f" ({cause.short_id} {'closed' if cause.status == Bead.Status.CLOSED else 'changed'})"
    for rig_id, ready in by_rig.items():
        ids = [b.short_id for b in ready]
        if rig_id is not None:
            rig = ready[0].rig
            first = ready[0]
            summary = (
                f"{first.short_id} is ready: {first.title}"
                if len(ready) == 1
                else f"{len(ready)} beads are ready: {', '.join(ids)}"
            )
            notification_send(
                rig=rig,
                kind=Kind.UNBLOCKED,
                severity=Severity.INFO,
                summary=(summary + (by if cause else ""))[:300],
                action=f"Claim and start {first.short_id} (the most urgent).",
                changes={"beads": ids, "unblocked_by": cause.short_id if cause else None},
            )
        event_append(
            "beads.unblocked",
            {"beads": ids, "by": cause.short_id if cause else None, "rig": rig_id},
            repository_id=_bead_repository_id(ready[0]),
            convoy_id=_bead_convoy_id(ready[0]),
            rig_id=rig_id,
        )


def _with_unblocking(candidates: set[int], change, cause: Bead | None) -> list[Bead]:
    """Run `change()` and return (and dispatch) the candidates it made ready."""
    before = _ready_among(candidates)
    change()
    after = _ready_among(candidates)
    unblocked = list(
        Bead.objects.filter(pk__in=after - before)
        .select_related("rig")
        .order_by("priority", "created_at", "id")
    )
    if unblocked:
        _beads_dispatch(unblocked, cause)
    return unblocked


def _bead_move(bead: Bead, to: str, **fields) -> list[Bead]:
    old = bead.status

    def change() -> None:
        transition(bead, to, **fields)
        event_append(
            "bead.status",
            {"bead": bead.short_id, "title": bead.title, "from": old, "to": to},
            repository_id=_bead_repository_id(bead),
            rig_id=bead.rig_id,
            convoy_id=_bead_convoy_id(bead),
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
        event_append(
            "bead.updated",
            {"bead": bead.short_id, "title": bead.title, "fields": sorted(values)},
            repository_id=_bead_repository_id(bead),
            rig_id=bead.rig_id,
            convoy_id=_bead_convoy_id(bead),
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


# Two racing edge inserts could close a cycle that neither sees alone, so blocking-edge inserts
# take turns on one advisory lock (they are rare and fast).
_BEAD_GRAPH_LOCK = 0x6774_6265_6164  # "gtbead"

_REACH_SQL = f"""
WITH RECURSIVE reach(node, prev) AS (
    SELECT depends_on_id, bead_id FROM {BeadDependency._meta.db_table}
    WHERE bead_id = %s AND "type" IN (%s, %s)
    UNION
    SELECT d.depends_on_id, d.bead_id FROM {BeadDependency._meta.db_table} d
    JOIN reach r ON d.bead_id = r.node
    WHERE d."type" IN (%s, %s)
)
SELECT node, prev FROM reach
"""  # noqa: S608 (only our table name is formatted in)


def bead_dependency_path(*, start: Bead, goal: Bead) -> list[int] | None:
    """Bead ids of a `start → ... → goal` path along blocking edges (`a → b`: a depends on b),
    or None. One recursive query returns every edge reachable from `start`; the path is rebuilt
    from the predecessors in Python."""
    with connection.cursor() as cursor:
        cursor.execute(_REACH_SQL, [start.pk, *BLOCKING_TYPES, *BLOCKING_TYPES])
        rows = cursor.fetchall()
    prev: dict[int, int] = {}
    for node, via in rows:
        prev.setdefault(node, via)
    if goal.pk not in prev:
        return None
    path = [goal.pk]
    while path[-1] != start.pk:
        path.append(prev[path[-1]])
    return path[::-1]


def _cycle_text(path: list[int], keep: int = 12) -> str:
    """`gt-a -> gt-b -> gt-a`; a long cycle keeps its ends: `gt-a -> ... (4990 more) -> gt-a`."""
    shown = path if len(path) <= keep else [*path[: keep // 2], None, *path[-keep // 2 :]]
    names = dict(Bead.objects.filter(pk__in=[p for p in shown if p]).values_list("pk", "short_id"))
    hidden = len(path) - keep
    return " -> ".join(names[p] if p else f"... ({hidden} more)" for p in shown)


@transaction.atomic
def bead_dependency_add(
    *, bead: Bead, depends_on: Bead, type: str = BeadDependency.Type.BLOCKS
) -> BeadDependency:
    """`bead` depends on `depends_on`. For `parent-child`, `depends_on` is the parent.

    A `blocks` or `parent-child` edge that would close a cycle among those edges is refused
    with the cycle named by short ids (`gt-a -> gt-b -> gt-a`).
    """
    if type not in BeadDependency.Type.values:
        raise ValidationError(
            {"type": f"unknown type {type!r}; use one of {', '.join(BeadDependency.Type.values)}."}
        )
    if bead.pk == depends_on.pk:
        raise ValidationError({"depends_on": f"{bead.short_id} cannot depend on itself."})
    existing = BeadDependency.objects.filter(bead=bead, depends_on=depends_on).first()
    if existing is not None:
        raise ValidationError(
            {
                "depends_on": f"{bead.short_id} already depends on {depends_on.short_id} "
                f"({existing.type})."
            }
        )
    if type in BLOCKING_TYPES:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_BEAD_GRAPH_LOCK])
        path = bead_dependency_path(start=depends_on, goal=bead)
        if path is not None:
            raise DependencyCycle(f"dependency cycle: {_cycle_text([bead.pk, *path])}.")
    dependency = BeadDependency.objects.create(bead=bead, depends_on=depends_on, type=type)
    event_append(
        "bead.dependency_added",
        {"bead": bead.short_id, "depends_on": depends_on.short_id, "type": type},
        repository_id=_bead_repository_id(bead),
        rig_id=bead.rig_id,
        convoy_id=_bead_convoy_id(bead),
    )
    return dependency


@transaction.atomic
def bead_dependency_remove(*, bead: Bead, depends_on: Bead) -> list[Bead]:
    """Drop the edge; returns (and dispatches) the beads this made ready."""
    edges = BeadDependency.objects.filter(bead=bead, depends_on=depends_on)
    if not edges.exists():
        raise ValidationError(
            {"depends_on": f"{bead.short_id} does not depend on {depends_on.short_id}."}
        )

    def change() -> None:
        edges.delete()
        event_append(
            "bead.dependency_removed",
            {"bead": bead.short_id, "depends_on": depends_on.short_id},
            repository_id=_bead_repository_id(bead),
            rig_id=bead.rig_id,
            convoy_id=_bead_convoy_id(bead),
        )

    return _with_unblocking(_downstream({bead.pk}, include_start=True), change, depends_on)


def _claim_rig(bead: Bead, agent: Agent) -> tuple[Rig | None, Leg | None]:
    """For a pool bead: the claiming agent's live rig on the pool's repository (preferring
    its rig on the pool's convoy) and that rig's leg in the convoy."""
    if bead.rig_id is not None:
        return None, None
    convoy = bead.convoy
    repository_id = bead.repository_id or (convoy.repository_id if convoy else None)
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
        return None, None
    rig = next((r for r in rigs if r.pk in legs), rigs[0])
    return rig, legs.get(rig.pk) or (bead.leg if bead.leg_id else None)


@transaction.atomic
def bead_claim(*, bead: Bead, agent: Agent) -> Bead:
    """Make `agent` the bead's assignee and start it (open → in_progress).

    One conditional UPDATE (open, unassigned or assigned to this agent, and ready) checked by
    row count: of N agents claiming at once exactly one wins; the others get ClaimConflict
    naming the holder. Claiming a bead you already hold is a no-op. A pool bead moves into the
    agent's live rig on that repository when it has one.
    """
    if not agent.is_active:
        raise ValidationError({"agent": f"agent {agent.name} is deactivated."})
    now = timezone.now()
    rig, leg = _claim_rig(bead, agent)
    values: dict[str, Any] = {
        "status": Bead.Status.IN_PROGRESS,
        "assignee": agent,
        "claimed_at": now,
        "updated_at": now,
    }
    if rig is not None:
        values.update(rig=rig, leg=leg, repository=None)
    won = (
        Bead.objects.filter(pk=bead.pk, status=Bead.Status.OPEN)
        .filter(Q(assignee__isnull=True) | Q(assignee=agent))
        .filter(pk__in=beads_ready(ids=[bead.pk], now=now).values("pk"))
        .update(**values)
    )
    bead.refresh_from_db()
    if not won:
        holder = bead.assignee
        if holder == agent and bead.status == Bead.Status.IN_PROGRESS:
            return bead  # already yours
        if holder is not None and holder != agent:
            raise ClaimConflict(
                f"{bead.short_id} is already claimed by {holder.name}.", bead=bead, holder=holder
            )
        reasons = bead_explain(bead, now=now) or [f"status is {bead.status}"]
        raise ClaimConflict(f"{bead.short_id} is not ready: {'; '.join(reasons)}.", bead=bead)
    event_append(
        "bead.claimed",
        {
            "bead": bead.short_id,
            "title": bead.title,
            "agent": agent.name,
            "from": Bead.Status.OPEN,
            "to": Bead.Status.IN_PROGRESS,
            "moved_to_rig": rig.pk if rig else None,
        },
        repository_id=_bead_repository_id(bead),
        rig_id=bead.rig_id,
        convoy_id=_bead_convoy_id(bead),
    )
    return bead
