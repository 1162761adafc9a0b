"""The bead graph: dependencies (cycles refused), and the unblocking check every change that
may make beads ready goes through (the beads it made ready are dispatched to their rigs)."""

from collections import defaultdict

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from common.errors import Refusal
from convoys.models import Bead, BeadDependency, Convoy, Leg
from convoys.selectors import beads_ready, rig_current_leg
from events.services import event_append
from notifications.models import Notification
from notifications.services import notification_send
from rigs.models import Rig

Kind = Notification.Kind
Severity = Notification.Severity


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


def bead_event(kind: str, bead: Bead, payload: dict) -> None:
    """Append a bead's event, placed on its repository, rig and convoy."""
    event_append(
        kind,
        payload,
        repository_id=_bead_repository_id(bead),
        rig_id=bead.rig_id,
        convoy_id=_bead_convoy_id(bead),
    )


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
            leg = rig_current_leg(rig)
            notification_send(
                rig=rig,
                kind=Kind.UNBLOCKED,
                severity=Severity.INFO,
                summary=(summary + (by if cause else ""))[:300],
                action=f"Claim and start {first.short_id} (the most urgent).",
                changes={"beads": ids, "unblocked_by": cause.short_id if cause else None},
                convoy_id=leg.convoy_id if leg else None,
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
    bead_event(
        "bead.dependency_added",
        bead,
        {"bead": bead.short_id, "depends_on": depends_on.short_id, "type": type},
    )
    return dependency


@transaction.atomic
def bead_dependency_remove(*, bead: Bead, depends_on: Bead) -> list[Bead]:
    """Drop the edge; returns (and dispatches) the beads this made ready."""
    edges = BeadDependency.objects.filter(bead=bead, depends_on=depends_on)
    if not edges.exists():
        raise Refusal(
            f"{bead.short_id} does not depend on {depends_on.short_id}.",
            code="not_found",
            field="depends_on",
            status=404,
        )

    def change() -> None:
        edges.delete()
        bead_event(
            "bead.dependency_removed",
            bead,
            {"bead": bead.short_id, "depends_on": depends_on.short_id},
        )

    return _with_unblocking(_downstream({bead.pk}, include_start=True), change, depends_on)
