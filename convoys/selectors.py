"""Reads for convoys, beads, notifications and events: query-count bounded.

"Ready" lives here and only here (`beads_ready`); the API, the CLI, the board, the admin and the
services that dispatch unblocked work all ask it.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Exists, F, Max, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from convoys.models import Bead, BeadDependency, Convoy, Leg, LegDependency
from rigs.models import MergeRequest, Rig

BLOCKS = BeadDependency.Type.BLOCKS
PARENT_CHILD = BeadDependency.Type.PARENT_CHILD
NOT_CLOSED = [s for s in Bead.Status.values if s != Bead.Status.CLOSED]
# A rig in one of these states will not move its leg forward without help.
DEAD_RIG_STATES = (Rig.State.FAILED, Rig.State.ARCHIVED)
# A leg in these states, or in a convoy in these, is finished: its beads cannot be claimed.
FINISHED_LEG_STATES = (Leg.State.LANDED, Leg.State.CANCELLED)
ENDED_CONVOY_STATES = (Convoy.State.LANDED, Convoy.State.CANCELLED)
# The work a leg still holds: a rig asking to land with these is refused unless forced.
OPEN_WORK_STATUSES = (Bead.Status.OPEN, Bead.Status.IN_PROGRESS)


# --- Beads: ready ---------------------------------------------------------------------------
#
# A bead is READY when all of these hold:
#   1. its status is `open` (not in progress, blocked, deferred or closed);
#   2. it is not deferred: `defer_until` is empty or already past;
#   3. it has no open `blocks` dependency (every bead it `blocks`-depends on is closed);
#   4. it has no blocked ancestor. Ancestors follow `parent-child` edges upwards (the child is
#      `bead`, the parent is `depends_on`), transitively. An ancestor is blocked when it is not
#      closed and (a) its status is `blocked` or `deferred`, or (b) it is deferred until a future
#      time, or (c) it has an open `blocks` dependency itself. An open or in-progress parent
#      does not block its children (an epic is in progress while its children are worked on).
# `related` and `discovered-from` edges never affect readiness. Ready beads are ordered by
# priority (0 first), then age (oldest first).
#
# Rule 4 is one recursive CTE, anchored on the beads that pass rules 1-3 in the same scope (the
# candidates, compiled by Django into the CTE): it walks up from them along parent-child edges
# and returns those with a blocked ancestor. Its cost follows the candidates and their depth,
# not the size of the graph, and PostgreSQL runs it once per query (a hashed subplan). UNION
# (not UNION ALL) stops the walk even on a cycle (refused on insert; rows can be hand-edited).
# A correlated walk per bead is as fast to run, but the planner prices it so high that
# PostgreSQL's JIT kicks in and costs 20-250 ms; this form stays under the JIT threshold.
_DEP, _BEAD = BeadDependency._meta.db_table, Bead._meta.db_table
_S = Bead.Status
# Only our own table names, constants and Django-compiled SQL are formatted in.
_BLOCKED_ANCESTOR_SQL = f"""
WITH RECURSIVE up(bead, id) AS (
    SELECT pc.bead_id, pc.depends_on_id FROM {_DEP} pc
    WHERE pc."type" = '{PARENT_CHILD}' AND pc.bead_id IN ({{candidates}})
    UNION
    SELECT up.bead, pc.depends_on_id FROM {_DEP} pc JOIN up ON pc.bead_id = up.id
    WHERE pc."type" = '{PARENT_CHILD}'
)
SELECT up.bead FROM up JOIN {_BEAD} p ON p.id = up.id
WHERE p.status <> '{_S.CLOSED}'
  AND (
    p.status IN ('{_S.BLOCKED}', '{_S.DEFERRED}')
    OR p.defer_until > %s
    OR EXISTS (
        SELECT 1 FROM {_DEP} d JOIN {_BEAD} b ON b.id = d.depends_on_id
        WHERE d.bead_id = p.id AND d."type" = '{BLOCKS}' AND b.status <> '{_S.CLOSED}'
    )
  )
"""  # noqa: S608


def _with_blocked_ancestor(candidates: QuerySet[Bead], now: datetime) -> RawSQL:
    """The ids among `candidates` that have a blocked ancestor (rule 4), as a subquery."""
    sql, params = candidates.order_by().values("pk").query.sql_with_params()
    return RawSQL(  # noqa: S611 (constant SQL and Django-compiled SQL; values are parameters)
        _BLOCKED_ANCESTOR_SQL.replace("{candidates}", sql),
        [*params, connection.ops.adapt_datetimefield_value(now)],
    )


def _open_blockers() -> QuerySet[BeadDependency]:
    """The open `blocks` dependencies of the outer bead (rule 3)."""
    return BeadDependency.objects.filter(
        bead=OuterRef("pk"), type=BLOCKS, depends_on__status__in=NOT_CLOSED
    )


def legs_finished() -> QuerySet[Leg]:
    """The legs whose work is finished: landed, cancelled, or in an ended convoy. Their beads
    are never ready and cannot be claimed."""
    return Leg.objects.filter(
        Q(state__in=FINISHED_LEG_STATES) | Q(convoy__state__in=ENDED_CONVOY_STATES)
    )


def _bead_scope(
    qs: QuerySet[Bead],
    *,
    rig: Rig | int | None = None,
    leg: Leg | int | None = None,
    convoy: Convoy | int | None = None,
    repository: Any = None,
    pool: bool = False,
    ids: Iterable[int] | None = None,
) -> QuerySet[Bead]:
    """Narrow to one rig, leg, convoy (its pool and its legs' beads), repository (its pool, its
    rigs' and its convoys' beads) or to some bead ids; `pool` keeps only beads with no rig yet.
    Subqueries, not joins: each branch of the OR can use its own index."""
    if rig is not None:
        qs = qs.filter(rig=rig)
    if leg is not None:
        qs = qs.filter(leg=leg)
    if convoy is not None:
        qs = qs.filter(Q(convoy=convoy) | Q(leg__in=Leg.objects.filter(convoy=convoy).values("pk")))
    if repository is not None:
        qs = qs.filter(
            Q(repository=repository)
            | Q(rig__in=Rig.objects.filter(repository=repository).values("pk"))
            | Q(convoy__in=Convoy.objects.filter(repository=repository).values("pk"))
        )
    if pool:
        qs = qs.filter(rig__isnull=True)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    return qs


def beads_ready(
    *,
    rig: Rig | int | None = None,
    leg: Leg | int | None = None,
    convoy: Convoy | int | None = None,
    repository: Any = None,
    pool: bool = False,
    ids: Iterable[int] | None = None,
    now: datetime | None = None,
    limit: int | None = None,
    lapsed_claims: bool = False,
) -> QuerySet[Bead]:
    """The beads that can be started now (see the rules above), most urgent first. One query.

    Narrow with these arguments rather than with `.filter()` on the result: the scope also
    bounds the ancestor walk (a later filter is still correct, only slower). `lapsed_claims`
    also counts beads in progress whose claim's lease has lapsed (what a claim may take over;
    the sweep returns them to open within a minute, and `ready` lists them then).
    """
    now = now or timezone.now()
    status = Q(status=Bead.Status.OPEN)
    if lapsed_claims:
        status |= Q(status=Bead.Status.IN_PROGRESS, lease_expires_at__lt=now)
    candidates = (
        Bead.objects.filter(status)
        .filter(Q(defer_until__isnull=True) | Q(defer_until__lte=now))
        .filter(~Exists(_open_blockers()))
        # the work of a finished leg or an ended convoy is over (subqueries: see bead_claim)
        .exclude(Exists(legs_finished().filter(pk=OuterRef("leg_id"))))
        .exclude(
            Exists(Convoy.objects.filter(pk=OuterRef("convoy_id"), state__in=ENDED_CONVOY_STATES))
        )
        # nor has a leg's work begun before it is handed to its rig
        .exclude(Exists(Leg.objects.filter(pk=OuterRef("leg_id"), state=Leg.State.PENDING)))
    )
    candidates = _bead_scope(
        candidates, rig=rig, leg=leg, convoy=convoy, repository=repository, pool=pool, ids=ids
    )
    qs = candidates.exclude(pk__in=_with_blocked_ancestor(candidates, now))
    qs = qs.order_by("priority", "created_at", "id")
    return qs[:limit] if limit is not None else qs


def beads_list(
    *,
    rig: Rig | int | None = None,
    leg: Leg | int | None = None,
    convoy: Convoy | int | None = None,
    repository: Any = None,
    pool: bool = False,
    status: str | None = None,
) -> QuerySet[Bead]:
    qs = _bead_scope(
        Bead.objects.all(), rig=rig, leg=leg, convoy=convoy, repository=repository, pool=pool
    )
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("priority", "created_at", "id")


def leg_waiting_text(leg: Leg) -> str:
    """Why a pending leg's beads are not ready yet (one query: what it waits for)."""
    if leg.convoy.state == Convoy.State.DRAFT:
        return f"its leg {leg.key} starts when convoy '{leg.convoy.title}' is launched"
    waiting = [
        f"{dep.key} ({dep.state})"
        for dep in leg.depends_on.exclude(state=Leg.State.LANDED).order_by("position", "id")
    ]
    if not waiting:
        return f"its leg {leg.key} has not started yet"
    return f"its leg {leg.key} waits for {', '.join(waiting)} to land"


def _why_blocked(bead: Bead, blockers: list[str], now: datetime) -> list[str]:
    """Why `bead` blocks its children (rule 4a-c); empty when it does not."""
    if bead.status == Bead.Status.CLOSED:
        return []
    why = []
    if bead.status in (Bead.Status.BLOCKED, Bead.Status.DEFERRED):
        why.append(f"its status is {bead.status}")
    if bead.defer_until and bead.defer_until > now:
        why.append(f"it is deferred until {bead.defer_until.isoformat()}")
    why.extend(f"it is blocked by {b}" for b in blockers)
    return why


def bead_explain(bead: Bead, *, now: datetime | None = None) -> list[str]:
    """Why `bead` is not ready, one reason per line; empty when it is ready.

    Mirrors `beads_ready` rule by rule (tests check they agree). Queries: 3 + the depth of the
    bead's ancestry.
    """
    now = now or timezone.now()
    reasons = []
    if bead.status != Bead.Status.OPEN:
        reasons.append(f"status is {bead.status}, not open")
    if bead.defer_until and bead.defer_until > now:
        reasons.append(f"deferred until {bead.defer_until.isoformat()}")
    if bead.leg_id and bead.leg.state == Leg.State.PENDING:
        reasons.append(leg_waiting_text(bead.leg))
    for blocker in Bead.objects.filter(
        dependents__bead=bead, dependents__type=BLOCKS, status__in=NOT_CLOSED
    ).order_by("short_id"):
        reasons.append(f"blocked by {blocker.short_id} ({blocker.status}): {blocker.title}")

    # Walk up the parent-child edges one level per query; `via` remembers how we got there.
    via: dict[int, int] = {}
    frontier = {bead.pk}
    while frontier:
        edges = BeadDependency.objects.filter(bead_id__in=frontier, type=PARENT_CHILD)
        frontier = set()
        for child_id, parent_id in edges.values_list("bead_id", "depends_on_id"):
            if parent_id not in via and parent_id != bead.pk:
                via[parent_id] = child_id
                frontier.add(parent_id)
    if via:
        ancestors = Bead.objects.in_bulk(via.keys())
        blockers: dict[int, list[str]] = defaultdict(list)
        for ancestor_id, short_id, status in (
            BeadDependency.objects.filter(
                bead_id__in=via.keys(), type=BLOCKS, depends_on__status__in=NOT_CLOSED
            )
            .order_by("depends_on__short_id")
            .values_list("bead_id", "depends_on__short_id", "depends_on__status")
        ):
            blockers[ancestor_id].append(f"{short_id} ({status})")
        for ancestor in sorted(ancestors.values(), key=lambda b: b.short_id):
            why = _why_blocked(ancestor, blockers[ancestor.pk], now)
            if not why:
                continue
            relation = "parent" if via[ancestor.pk] == bead.pk else "ancestor"
            reasons.append(
                f"{relation} {ancestor.short_id} is blocked ({'; '.join(why)}): {ancestor.title}"
            )
    return reasons


# --- Convoys and legs -----------------------------------------------------------------------


def leg_merge_target(leg: Leg) -> str:
    """The branch a leg's rig merges into: the convoy's integration branch, else its target."""
    convoy = leg.convoy
    return convoy.integration_branch or convoy.target_branch


def rig_current_leg(rig: Rig | int | None) -> Leg | None:
    """The open leg a rig works on in a launched (or draft) convoy; a rig has at most one in an
    active convoy (convoy_create and convoy_launch refuse a busy rig)."""
    if rig is None:
        return None
    rig_id = rig if isinstance(rig, int) else rig.pk
    return rigs_current_legs([rig_id], dependencies=False).get(rig_id)


def rigs_current_legs(rig_ids: Iterable[int], *, dependencies: bool = True) -> dict[int, Leg]:
    """`rig_current_leg` of many rigs in one query (two with `dependencies`, prefetched for the
    cascades, which read each leg's dependencies' scopes)."""
    qs = (
        Leg.objects.filter(rig_id__in=list(rig_ids), state__in=Leg.OPEN_STATES)
        .exclude(convoy__state__in=[Convoy.State.LANDED, Convoy.State.CANCELLED])
        .select_related("convoy")
        # a launched convoy's leg before a draft's, then the newest
        .order_by(F("convoy__launched_at").desc(nulls_last=True), "-id")
    )
    legs: dict[int, Leg] = {}
    for leg in qs.prefetch_related("depends_on") if dependencies else qs:
        legs.setdefault(leg.rig_id, leg)  # the first is the current one (see the ordering)
    return legs


def landed_text(merge_request: MergeRequest | None) -> str:
    """Where a merge request landed: ' in 1a2b3c4d5e6f (merge request #4) on `main`'."""
    if merge_request is None:
        return ""
    commit = merge_request.merge_commit[:12]
    where = f" on `{merge_request.target_branch}`" if merge_request.target_branch else ""
    return (f" in {commit}" if commit else "") + f" (merge request #{merge_request.id}){where}"


@dataclass(frozen=True)
class FinishedWork:
    """Why a rig has nothing left to do: it has no current leg, and its last leg landed (or was
    cancelled, or its convoy ended); or, for a rig that never had a leg, its branch merged.
    `merge_request` is what landed it (None when it did not land)."""

    leg: Leg | None
    merge_request: MergeRequest | None

    @property
    def landed(self) -> bool:
        if self.leg is None:
            return True
        return self.leg.state == Leg.State.LANDED

    @property
    def commit(self) -> str:
        return self.merge_request.merge_commit if self.merge_request is not None else ""

    def text(self) -> str:
        """One sentence part: "leg `api` landed in 1a2b3c4d5e6f (merge request #4) on `main`"."""
        leg, landed = self.leg, landed_text(self.merge_request)
        if leg is None:
            return f"its branch landed{landed}"
        convoy = leg.convoy
        if leg.state == Leg.State.LANDED:
            return f"leg `{leg.key}` of convoy '{convoy.title}' landed{landed}"
        if leg.state == Leg.State.CANCELLED:
            return f"leg `{leg.key}` of convoy '{convoy.title}' was cancelled"
        return f"leg `{leg.key}`'s convoy '{convoy.title}' is {convoy.state}"


def work_finished_message(rig: Rig, finished: FinishedWork) -> str:
    """Why a finished rig is refused a merge request (`convoys.services`) or an agent run
    (`runner.services`)."""
    return (
        f"rig {rig.slug}'s work is finished: {finished.text()}. There is nothing more to do in it."
    )


def rigs_finished_work(
    rigs: Iterable[Rig], current: dict[int, Leg] | None = None
) -> dict[int, FinishedWork]:
    """The rigs whose work is finished (see `FinishedWork`), by rig id; a rig with a current
    (open) leg, or one that never had a leg and is not merged, is left out. Pass `current`
    (`rigs_current_legs`) when it is known. At most three queries, whatever the number of rigs
    or legs."""
    rigs = list(rigs)
    if current is None:
        current = rigs_current_legs([rig.id for rig in rigs], dependencies=False) if rigs else {}
    idle = {rig.id: rig for rig in rigs if rig.id not in current}
    if not idle:
        return {}
    newest = Leg.objects.filter(rig_id__in=list(idle)).values("rig_id").annotate(last=Max("id"))
    last_legs = {
        leg.rig_id: leg
        for leg in Leg.objects.filter(id__in=newest.values("last")).select_related(
            "convoy", "landed_merge_request"
        )
    }
    finished = {
        rig_id: FinishedWork(leg, leg.landed_merge_request) for rig_id, leg in last_legs.items()
    }
    merged = [
        pk for pk, rig in idle.items() if pk not in last_legs and rig.state == Rig.State.MERGED
    ]
    if merged:
        landed = (
            MergeRequest.objects.filter(rig_id__in=merged, state=MergeRequest.State.MERGED)
            .values("rig_id")
            .annotate(last=Max("id"))
        )
        by_rig = {mr.rig_id: mr for mr in MergeRequest.objects.filter(id__in=landed.values("last"))}
        finished.update({pk: FinishedWork(None, by_rig.get(pk)) for pk in merged})
    return finished


def rig_finished_work(rig: Rig, current: Leg | None | bool = False) -> FinishedWork | None:
    """`rigs_finished_work` of one rig (None: it has work to do). Pass `current` when the rig's
    current leg is known (None: it has none)."""
    legs = None if current is False else ({rig.id: current} if current is not None else {})
    return rigs_finished_work([rig], legs).get(rig.id)


def rig_open_work(rig: Rig, leg: Leg | None) -> QuerySet[Bead]:
    """The beads that keep `rig` from being done with its current `leg`: open or in progress,
    on that leg or on the rig with no leg. Most urgent first."""
    scope = Q(rig=rig, leg__isnull=True)
    if leg is not None:
        scope |= Q(leg=leg)
    return Bead.objects.filter(scope, status__in=OPEN_WORK_STATUSES).order_by(
        "priority", "created_at", "id"
    )


def merge_target_for_rig(rig: Rig, leg: Leg | None | bool = False) -> str:
    """Where a rig's merge request should land: its current leg's merge target (the convoy's
    integration branch `convoy/<slug>` when it has one), else the repository's target branch.
    Pass `leg` when it is already known (None: the rig has none)."""
    if leg is False:
        leg = rig_current_leg(rig)
    if leg is not None and leg.convoy.state in Convoy.ACTIVE_STATES:
        return leg_merge_target(leg)
    return rig.repository.target_branch


def convoy_waves(
    legs: Iterable[Leg], edges: Iterable[tuple[int, int]] | None = None
) -> list[list[Leg]]:
    """Topological levels: wave 1 depends on nothing, wave n on legs of earlier waves only.

    `edges` are (leg_id, depends_on_id) pairs; loaded in one query when not given.
    """
    legs = sorted(legs, key=lambda leg: (leg.position, leg.id))
    ids = {leg.id for leg in legs}
    if edges is None:
        edges = LegDependency.objects.filter(leg_id__in=ids).values_list("leg_id", "depends_on_id")
    deps: dict[int, set[int]] = {leg.id: set() for leg in legs}
    for leg_id, depends_on_id in edges:
        if leg_id in ids and depends_on_id in ids:
            deps[leg_id].add(depends_on_id)
    waves: list[list[Leg]] = []
    placed: set[int] = set()
    remaining = legs
    while remaining:
        wave = [leg for leg in remaining if deps[leg.id] <= placed]
        if not wave:  # a cycle (refused on input, so only by hand-edited rows): show it last
            waves.append(remaining)
            break
        waves.append(wave)
        placed.update(leg.id for leg in wave)
        remaining = [leg for leg in remaining if leg.id not in placed]
    return waves


def _leg_blockers(
    leg: Leg, deps: dict[int, set[int]], by_id: dict[int, Leg]
) -> list[dict[str, Any]]:
    """What keeps an unlanded leg from moving: unlanded dependencies, a dead or missing rig."""
    blockers = []
    if leg.state == Leg.State.PENDING:
        for dep_id in sorted(deps[leg.id], key=lambda i: (by_id[i].position, i)):
            dep = by_id[dep_id]
            if dep.state != Leg.State.LANDED:
                blockers.append({"kind": "leg", "leg": dep.key, "state": dep.state})
    if leg.state in Leg.OPEN_STATES:
        if leg.rig is None and leg.convoy.state != Convoy.State.DRAFT:
            blockers.append({"kind": "rig", "rig": None, "state": "missing"})
        elif leg.rig is not None and leg.rig.state in DEAD_RIG_STATES:
            blockers.append({"kind": "rig", "rig": leg.rig.slug, "state": leg.rig.state})
    return blockers


def _blocker_text(blocker: dict[str, Any]) -> str:
    if blocker["kind"] == "leg":
        return f"waits for leg {blocker['leg']} ({blocker['state']})"
    if blocker["rig"] is None:
        return "has no rig"
    return f"rig {blocker['rig']} is {blocker['state']}"


def convoy_rollup(convoy: Convoy) -> dict[str, Any]:
    """Everything the board and the API show about a convoy, in at most 3 queries: the
    batched `convoys_rollups` for one convoy."""
    return convoys_rollups([convoy])[convoy.id]


def convoys_rollups(convoys: Iterable[Convoy]) -> dict[int, dict[str, Any]]:
    """`convoy_rollup` of many convoys (a page of the list) in at most 3 queries in all.

    Each: legs (with `depends_on` keys, wave, rig), legs by state, progress (landed/total,
    cancelled legs left out), blocked legs with what blocks them, the waves, and the state the
    convoy should be in (`derived_state`, applied by `convoy_refresh_state`).
    """
    by_convoy = {convoy.id: convoy for convoy in convoys}
    legs_of: dict[int, list[Leg]] = {pk: [] for pk in by_convoy}
    for leg in (
        Leg.objects.filter(convoy_id__in=by_convoy).select_related("rig").order_by("position", "id")
    ):
        leg.convoy = by_convoy[leg.convoy_id]  # already loaded: saves a query per leg
        legs_of[leg.convoy_id].append(leg)
    convoy_of = {leg.id: leg.convoy_id for legs in legs_of.values() for leg in legs}
    edges_of: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for edge in LegDependency.objects.filter(leg__convoy_id__in=by_convoy).values_list(
        "leg_id", "depends_on_id"
    ):
        edges_of[convoy_of[edge[0]]].append(edge)
    landing_ids = [c.landing_merge_request_id for c in by_convoy.values()]
    landings = MergeRequest.objects.in_bulk([pk for pk in landing_ids if pk])
    return {
        pk: _rollup(
            convoy, legs_of[pk], edges_of[pk], landings.get(convoy.landing_merge_request_id)
        )
        for pk, convoy in by_convoy.items()
    }


def _rollup(
    convoy: Convoy, legs: list[Leg], edges: list[tuple[int, int]], landing: MergeRequest | None
) -> dict[str, Any]:
    by_id = {leg.id: leg for leg in legs}
    deps: dict[int, set[int]] = {leg.id: set() for leg in legs}
    for leg_id, depends_on_id in edges:
        deps[leg_id].add(depends_on_id)
    waves = convoy_waves(legs, edges)
    wave_of = {leg.id: n for n, wave in enumerate(waves, start=1) for leg in wave}

    counted = [leg for leg in legs if leg.state != Leg.State.CANCELLED]
    landed = sum(1 for leg in counted if leg.state == Leg.State.LANDED)
    blocked = []
    for leg in legs:
        blockers = _leg_blockers(leg, deps, by_id)
        if blockers:
            blocked.append(
                {
                    "leg": leg.key,
                    "id": leg.id,
                    "blocked_by": blockers,
                    "reasons": [_blocker_text(b) for b in blockers],
                }
            )
    return {
        "convoy": convoy.id,
        "state": convoy.state,
        "derived_state": convoy_derived_state(convoy, counted, landing),
        "legs": [
            {
                "id": leg.id,
                "key": leg.key,
                "title": leg.title,
                "description": leg.description,
                "acceptance": leg.acceptance,
                "state": leg.state,
                "rig": leg.rig_id,
                "rig_slug": leg.rig.slug if leg.rig else None,
                "rig_state": leg.rig.state if leg.rig else None,
                "depends_on": [by_id[d].key for d in sorted(deps[leg.id])],
                "wave": wave_of[leg.id],
            }
            for leg in legs
        ],
        "by_state": dict(Counter(leg.state for leg in legs)),
        "progress": {
            "landed": landed,
            "total": len(counted),
            "percent": round(100 * landed / len(counted)) if counted else 0,
        },
        "blocked": blocked,
        "waves": [[leg.key for leg in wave] for wave in waves],
        "integration_branch": convoy.integration_branch,
        "landing_merge_request": (
            {"id": landing.id, "state": landing.state, "reason": landing.reason}
            if landing
            else None
        ),
    }


def _leg_can_move(leg: Leg) -> bool:
    return (
        leg.state in Leg.MOVING_STATES
        and leg.rig is not None
        and leg.rig.state not in DEAD_RIG_STATES
    )


def convoy_derived_state(convoy: Convoy, counted: list[Leg], landing: MergeRequest | None) -> str:
    """The state an active convoy should be in, from its legs (cancelled legs left out).

    landed: every leg landed (with an integration branch: and the convoy's landing merge request
    has been recorded as landed by `convoy_landing_merged`, so here it stays `landing`);
    landing: every unlanded leg is merging, or the integration branch's landing merge request is
    queued; blocked: no leg can move (dependencies that will not land, dead rigs, a failed
    landing merge request); else launched.
    """
    S = Convoy.State
    if convoy.state not in Convoy.ACTIVE_STATES:
        return convoy.state
    unlanded = [leg for leg in counted if leg.state != Leg.State.LANDED]
    if counted and not unlanded:
        if not convoy.use_integration_branch:
            return S.LANDED
        ended = landing is not None and landing.state not in MergeRequest.ACTIVE_STATES
        if ended and landing.state != MergeRequest.State.MERGED:
            return S.BLOCKED  # the landing merge failed: someone must look
        return S.LANDING
    if not any(_leg_can_move(leg) for leg in unlanded):
        return S.BLOCKED
    if all(leg.state == Leg.State.MERGING for leg in unlanded):
        return S.LANDING
    return S.LAUNCHED


# --- Beads: blocked -------------------------------------------------------------------------


def beads_blocked(
    *,
    rig: Rig | int | None = None,
    leg: Leg | int | None = None,
    convoy: Convoy | int | None = None,
    repository: Any = None,
    now: datetime | None = None,
) -> QuerySet[Bead]:
    """The beads that wait (`gt blocked`): not closed, not in progress, not ready, and not of a
    finished leg or an ended convoy (that work is over, not blocked). Most urgent first. One
    query; `beads_blocked_reasons` says why, for a page of them."""
    now = now or timezone.now()
    scope = {"rig": rig, "leg": leg, "convoy": convoy, "repository": repository}
    qs = _bead_scope(
        Bead.objects.filter(
            status__in=(Bead.Status.OPEN, Bead.Status.BLOCKED, Bead.Status.DEFERRED)
        ),
        **scope,
    )
    qs = qs.exclude(Exists(legs_finished().filter(pk=OuterRef("leg_id")))).exclude(
        Exists(Convoy.objects.filter(pk=OuterRef("convoy_id"), state__in=ENDED_CONVOY_STATES))
    )
    ready = beads_ready(**scope, now=now).values("pk")
    return (
        qs.exclude(pk__in=ready)
        .select_related("leg", "leg__convoy")
        .order_by("priority", "created_at", "id")
    )


def beads_blocked_reasons(
    beads: list[Bead], *, now: datetime | None = None
) -> dict[int, tuple[list[str], list[Bead]]]:
    """For each bead (a page of `beads_blocked`): (why it is not ready, one line each; the open
    beads it waits for through a `blocks` edge). Two queries, plus `bead_explain` for the
    beads that have a parent (their ancestors may block them)."""
    now = now or timezone.now()
    ids = [bead.pk for bead in beads]
    blockers: dict[int, list[Bead]] = defaultdict(list)
    for edge in (
        BeadDependency.objects.filter(
            bead_id__in=ids, type=BLOCKS, depends_on__status__in=NOT_CLOSED
        )
        .select_related("depends_on", "depends_on__assignee")
        .order_by("depends_on__short_id")
    ):
        blockers[edge.bead_id].append(edge.depends_on)
    with_parent = set(
        BeadDependency.objects.filter(bead_id__in=ids, type=PARENT_CHILD).values_list(
            "bead_id", flat=True
        )
    )
    found: dict[int, tuple[list[str], list[Bead]]] = {}
    waiting: dict[int, str] = {}
    for bead in beads:
        if bead.pk in with_parent:
            reasons = bead_explain(bead, now=now)
        else:
            reasons = []
            if bead.status != Bead.Status.OPEN:
                reasons.append(f"status is {bead.status}, not open")
            if bead.defer_until and bead.defer_until > now:
                reasons.append(f"deferred until {bead.defer_until.isoformat()}")
            if bead.leg_id and bead.leg.state == Leg.State.PENDING:
                if bead.leg_id not in waiting:  # one query per pending leg on the page
                    waiting[bead.leg_id] = leg_waiting_text(bead.leg)
                reasons.append(waiting[bead.leg_id])
            reasons += [
                f"blocked by {b.short_id} ({b.status}): {b.title}" for b in blockers[bead.pk]
            ]
        found[bead.pk] = (reasons, blockers[bead.pk])
    return found
