"""Reads for the board's pages (board, convoy, rig, merge queue): query-count bounded.

Each page function returns a plain context dict for its template. The number of queries does
not grow with the number of convoys, legs, rigs or merge requests shown: rows are loaded in a
few batched queries and stitched together here.

Every page renders the id of the newest event *before* it reads anything else, so an event that
commits while the page is being read is replayed by the websocket (refreshing a fragment twice
is harmless; missing an update is not).
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from django.utils import timezone

from cascades.feed import cascade_feed
from convoys.models import Bead, BeadComment, BeadDependency, Convoy, Leg, LegDependency
from convoys.selectors import (
    _blocker_text,
    _leg_blockers,
    beads_ready,
    convoy_rollup,
    merge_target_for_rig,
    rig_current_leg,
    rig_finished_work,
    rigs_current_legs,
)
from convoys.services.coordination import TURN_PREFIX
from events.selectors import last_event_id
from notifications.models import ACTION_SEVERITIES, ASKS_PERSON_KINDS, Notification
from rigs.models import Agent, MergeRequest, Repository, Rig
from rigs.selectors import RigPosition, rig_position, rig_positions
from runner import selectors as run_selectors
from runner import services as run_services
from runner.limits import Limit, limits_of
from runner.models import AgentRun, Budget

S = Convoy.State
# The board's columns, left to right. Cancelled convoys sit behind a toggle.
COLUMNS = [
    (S.DRAFT, "Draft", "Planned, not started yet."),
    (S.LAUNCHED, "Launched", "Legs are being worked on."),
    (S.BLOCKED, "Blocked", "No leg can move without help."),
    (S.LANDING, "Landing", "Every open leg is in the merge queue."),
    (S.LANDED, "Landed", "Every leg has landed."),
]
CANCELLED_COLUMN = (S.CANCELLED, "Cancelled", "Stopped by an operator.")
OPEN_STATES = (S.DRAFT, *Convoy.ACTIVE_STATES)
# Finished convoys accumulate forever: the board shows the most recent ones.
FINISHED_LIMIT = 100

# Why a column refuses a drop (the state machine's refusals come from the services).
DERIVED_COLUMNS = {
    S.BLOCKED: "blocked is derived from the legs (no leg can move); it cannot be dragged",
    S.LANDING: "landing is derived from the merge queue; it cannot be dragged",
    S.LANDED: "a convoy lands when its last merge lands; it cannot be dragged",
}


def age(when: datetime | None, now: datetime | None = None) -> str:
    """A compact age: 45s, 12m, 3h, 4d, 7w."""
    if when is None:
        return ""
    seconds = max(0, int(((now or timezone.now()) - when).total_seconds()))
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def lease_text(bead: Bead, now: datetime) -> str:
    """An in-progress bead's claim: 'lease expires in 8m' (or 'lease lapsed 2m ago': the
    sweep opens it within a minute). '' when it is not claimed on a lease."""
    until = bead.lease_expires_at
    if bead.status != Bead.Status.IN_PROGRESS or until is None:
        return ""
    if until <= now:
        return f"lease lapsed {age(until, now)} ago"
    return f"lease expires in {age(now, until)}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def money(value: Decimal | int | None) -> str:
    """Dollars: $1,234.50; a fraction of a cent keeps its digits ($0.0042)."""
    value = Decimal(value or 0)
    if value and abs(value) < Decimal("0.01"):
        return f"${value:.4f}"
    return f"${value:,.2f}"


@dataclass
class Spend:
    """What a convoy's agent runs cost, against its budget (None: no budget)."""

    spent: Decimal
    budget: Decimal | None
    reached: bool

    @classmethod
    def of(cls, convoy: Convoy) -> "Spend":
        return cls(
            spent=convoy.spent_usd or Decimal(0),
            budget=convoy.budget_usd,
            reached=convoy.budget_reached,
        )

    @property
    def text(self) -> str:
        if self.budget is None:
            return money(self.spent)
        return f"{money(self.spent)} of {money(self.budget)}"

    @property
    def label(self) -> str:
        """For screen readers and tooltips."""
        if self.budget is None:
            return f"{money(self.spent)} spent by agent runs (no budget)"
        return f"{money(self.spent)} spent by agent runs of a {money(self.budget)} budget"


def running_agents_by_convoy() -> dict[int, int]:
    """How many agents are running (starting or running) for each convoy: one query, grouped.
    Few runs are live at any time (at most the machines' agent slots), so this reads a handful
    of rows however many convoys the page shows."""
    return dict(
        AgentRun.objects.filter(state__in=AgentRun.PROCESS_STATES, convoy__isnull=False)
        .order_by()
        .values("convoy_id")
        .annotate(n=Count("id"))
        .values_list("convoy_id", "n")
    )


# --- the board ---------------------------------------------------------------------------------


@dataclass
class BoardFilters:
    """What the board shows (read from its query string by `board.forms.BoardFilterForm`)."""

    repository: int | None = None
    agent: str = ""
    q: str = ""
    cancelled: bool = False

    def querystring(self) -> str:
        params = {
            "repository": self.repository or "",
            "agent": self.agent,
            "q": self.q,
            "cancelled": "1" if self.cancelled else "",
        }
        return urlencode({k: v for k, v in params.items() if v})

    def apply(self, qs: QuerySet[Convoy]) -> QuerySet[Convoy]:
        if self.repository:
            qs = qs.filter(repository_id=self.repository)
        if self.agent:
            # An agent works a convoy through a leg naming it or a rig it owns.
            qs = qs.filter(
                Exists(
                    Leg.objects.filter(convoy=OuterRef("pk")).filter(
                        Q(agent__name=self.agent) | Q(rig__agent__name=self.agent)
                    )
                )
            )
        if self.q:
            qs = qs.filter(
                Q(title__icontains=self.q)
                | Q(slug__icontains=self.q)
                | Exists(Leg.objects.filter(convoy=OuterRef("pk"), key=self.q))
            )
        return qs


@dataclass
class Chip:
    leg: Leg
    rig_state: str  # "" without a rig

    @property
    def label(self) -> str:
        rig = f"rig {self.leg.rig.slug} {self.rig_state}" if self.leg.rig else "no rig yet"
        return f"{self.leg.key}: leg {self.leg.state}, {rig}"


@dataclass
class Card:
    convoy: Convoy
    chips: list[Chip] = field(default_factory=list)
    landed: int = 0
    total: int = 0
    blocked_reasons: list[str] = field(default_factory=list)
    unacked: int = 0
    age: str = ""
    running: int = 0

    @property
    def spend(self) -> Spend:
        return Spend.of(self.convoy)

    @property
    def percent(self) -> int:
        return round(100 * self.landed / self.total) if self.total else 0

    @property
    def rig_ids(self) -> str:
        return " ".join(str(c.leg.rig_id) for c in self.chips if c.leg.rig_id)


def _cards(convoys: list[Convoy]) -> list[Card]:
    """Cards for these convoys: four more queries, however many convoys and legs."""
    if not convoys:
        return []
    now = timezone.now()
    ids = [c.id for c in convoys]
    legs_by_convoy: dict[int, list[Leg]] = defaultdict(list)
    for leg in (
        Leg.objects.filter(convoy_id__in=ids)
        .select_related("rig", "agent")
        .order_by("convoy_id", "position", "id")
    ):
        legs_by_convoy[leg.convoy_id].append(leg)

    blocked_ids = [c.id for c in convoys if c.state == S.BLOCKED]
    deps: dict[int, set[int]] = defaultdict(set)
    if blocked_ids:
        for leg_id, dep_id in LegDependency.objects.filter(
            leg__convoy_id__in=blocked_ids
        ).values_list("leg_id", "depends_on_id"):
            deps[leg_id].add(dep_id)

    # Open notices that ask for an action now (warning, critical) of the rigs working an open
    # convoy (a landed convoy's rigs have moved on: their inbox is about other work).
    open_rigs = {
        leg.rig_id
        for c in convoys
        if c.state in OPEN_STATES
        for leg in legs_by_convoy[c.id]
        if leg.rig_id
    }
    unacked: dict[int, int] = {}
    if open_rigs:
        unacked = dict(
            Notification.objects.filter(
                rig_id__in=open_rigs,
                state=Notification.State.OPEN,
                severity__in=ACTION_SEVERITIES,
            )
            .values("rig_id")
            .annotate(n=Count("id"))
            .values_list("rig_id", "n")
        )

    running = running_agents_by_convoy()

    cards = []
    for convoy in convoys:
        legs = legs_by_convoy[convoy.id]
        by_id = {leg.id: leg for leg in legs}
        counted = [leg for leg in legs if leg.state != Leg.State.CANCELLED]
        card = Card(
            convoy=convoy,
            chips=[Chip(leg, leg.rig.state if leg.rig else "") for leg in legs],
            landed=sum(1 for leg in counted if leg.state == Leg.State.LANDED),
            total=len(counted),
            age=age(convoy.created_at, now),
            running=running.get(convoy.id, 0),
        )
        if convoy.state in OPEN_STATES:
            card.unacked = sum(unacked.get(rid, 0) for rid in {leg.rig_id for leg in legs})
        if convoy.state == S.BLOCKED:
            leg_deps = {leg.id: deps[leg.id] & by_id.keys() for leg in legs}
            for leg in legs:
                leg.convoy = convoy  # loaded already: saves a query per leg
                blockers = _leg_blockers(leg, leg_deps, by_id)
                if blockers:
                    card.blocked_reasons.append(
                        f"{leg.key} {', '.join(_blocker_text(b) for b in blockers)}"
                    )
            landing = convoy.landing_merge_request
            if landing is not None and landing.state not in MergeRequest.ACTIVE_STATES:
                card.blocked_reasons.append(f"landing merge request {landing.id} {landing.state}")
            if not card.blocked_reasons:
                card.blocked_reasons.append("no leg can move")
        cards.append(card)
    return cards


def _convoys_base(filters: BoardFilters) -> QuerySet[Convoy]:
    return filters.apply(
        Convoy.objects.select_related("repository", "landing_merge_request")
    ).order_by("-updated_at", "-id")


def board_page(filters: BoardFilters) -> dict[str, Any]:
    """The board: open convoys in full, the most recent finished ones. Ten queries (eleven with
    the cancelled shown), however many convoys and legs."""
    event_id = last_event_id()
    base = _convoys_base(filters)
    convoys = list(base.filter(state__in=OPEN_STATES))
    finished_states = [S.LANDED] + ([S.CANCELLED] if filters.cancelled else [])
    totals = dict(
        filters.apply(Convoy.objects.filter(state__in=[S.LANDED, S.CANCELLED]))
        .order_by()
        .values("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    for state in finished_states:
        convoys += list(base.filter(state=state)[:FINISHED_LIMIT])
    cards = _cards(convoys)
    by_state: dict[str, list[Card]] = defaultdict(list)
    for card in cards:
        by_state[card.convoy.state].append(card)
    columns = [*COLUMNS, *([CANCELLED_COLUMN] if filters.cancelled else [])]
    return {
        "last_event_id": event_id,
        "groups": "board",
        "filters": filters,
        "columns": [
            {
                "state": state,
                "label": label,
                "help": help_text,
                "cards": by_state[state],
                "total": totals.get(state, len(by_state[state])),
            }
            for state, label, help_text in columns
        ],
        "cancelled_total": totals.get(S.CANCELLED, 0),
        "repositories": list(Repository.objects.order_by("name").values("id", "name")),
        "agents": list(Agent.objects.order_by("name").values_list("name", flat=True)),
    }


def board_card(convoy_id: int, filters: BoardFilters) -> Card | None:
    """One card, or None when the convoy is gone or the page's filters hide it."""
    qs = _convoys_base(filters).filter(pk=convoy_id)
    if not filters.cancelled:
        qs = qs.exclude(state=S.CANCELLED)
    convoy = qs.first()
    return _cards([convoy])[0] if convoy else None


# --- the new-convoy form ------------------------------------------------------------------------


def convoy_new_page() -> dict[str, Any]:
    """The form's choices: repositories, and who may take a leg (an active agent, for whom a rig
    is provisioned at launch, or a live rig). Three queries."""
    agents = Agent.objects.filter(is_active=True).order_by("name")
    rigs = (
        Rig.objects.filter(state__in=Rig.LIVE_STATES)
        .select_related("repository")
        .order_by("repository__name", "slug")
    )
    return {
        "repositories": list(Repository.objects.order_by("name")),
        "assignee_groups": [
            (
                "Agent (a rig is provisioned at launch)",
                [(f"agent:{a.name}", a.name) for a in agents],
            ),
            (
                "Existing rig",
                [(f"rig:{r.id}", f"{r.repository.name}/{r.slug} ({r.state})") for r in rigs],
            ),
        ],
    }


# --- the convoy page ---------------------------------------------------------------------------

BOX_W, BOX_H, COL_GAP, ROW_GAP, PAD, HEADER = 184, 48, 76, 14, 12, 26


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def wave_graph(legs: list[dict[str, Any]], waves: list[list[str]]) -> dict[str, Any]:
    """Lay the legs out for an SVG: one column per wave, one box per leg, one curve per
    dependency. Within a wave, legs sit near the legs they depend on (fewer crossings)."""
    by_key = {leg["key"]: leg for leg in legs}
    row: dict[str, float] = {}
    columns = []
    for wave in waves:

        def weight(key: str) -> float:
            parents = [row[d] for d in by_key[key]["depends_on"] if d in row]
            return sum(parents) / len(parents) if parents else -1.0

        ordered = sorted(wave, key=lambda k: (weight(k), wave.index(k)))
        for n, key in enumerate(ordered):
            row[key] = n
        columns.append(ordered)
    boxes, pos = [], {}
    for col, keys in enumerate(columns):
        for n, key in enumerate(keys):
            leg = by_key[key]
            x = PAD + col * (BOX_W + COL_GAP)
            y = PAD + HEADER + n * (BOX_H + ROW_GAP)
            pos[key] = (x, y)
            rig = leg.get("rig_slug") or "no rig yet"
            boxes.append(
                {
                    **leg,
                    "x": x,
                    "y": y,
                    "tx": x + 10,
                    "label": _clip(key, 24),
                    "sub": _clip(f"{leg['state']} · {rig}", 28),
                    "title": f"{key}: {leg['title']} — leg {leg['state']}, rig {rig}"
                    + (f" ({leg['rig_state']})" if leg.get("rig_state") else ""),
                }
            )
    edges = []
    for leg in legs:
        for dep in leg["depends_on"]:
            if dep not in pos or leg["key"] not in pos:
                continue
            (x1, y1), (x2, y2) = pos[dep], pos[leg["key"]]
            x1, y1, y2 = x1 + BOX_W, y1 + BOX_H / 2, y2 + BOX_H / 2
            bend = max(30, (x2 - x1) / 2)
            edges.append(
                {
                    "d": f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2 - 2},{y2}",
                    "landed": by_key[dep]["state"] == Leg.State.LANDED,
                    "title": f"{leg['key']} depends on {dep}",
                }
            )
    tallest = max((len(c) for c in columns), default=0)
    return {
        "boxes": boxes,
        "edges": edges,
        "waves": [
            {"n": n, "x": PAD + (n - 1) * (BOX_W + COL_GAP), "size": len(c)}
            for n, c in enumerate(columns, start=1)
        ],
        "width": PAD * 2 + len(columns) * BOX_W + max(0, len(columns) - 1) * COL_GAP,
        "height": PAD * 2 + HEADER + tallest * BOX_H + max(0, tallest - 1) * ROW_GAP,
        "box_w": BOX_W,
        "box_h": BOX_H,
    }


def _latest_merge_request_id():
    return Subquery(
        MergeRequest.objects.filter(rig=OuterRef("rig"))
        .order_by("-created_at", "-id")
        .values("id")[:1]
    )


# --- the convoy page's cascade feed -----------------------------------------------------------

FEED_PAGE_WINDOW = 2  # page links shown either side of the current one


@dataclass
class FeedFilters:
    """The cascade feed's filters and page, read from the convoy page's query string by
    `board.forms.FeedFilterForm`: `?feed_rig=<slug>&feed_kind=<kind>&feed_page=<n>`."""

    rig: str = ""
    kind: str = ""
    page: int = 1

    def querystring(self, page: int | None = None) -> str:
        """The query string of these filters at `page` (the current page when None)."""
        number = self.page if page is None else page
        params = {"feed_rig": self.rig, "feed_kind": self.kind, "feed_page": number}
        return urlencode({k: v for k, v in params.items() if v and v != 1})

    @property
    def active(self) -> bool:
        return bool(self.rig or self.kind)


def _feed_pages(filters: FeedFilters, page) -> list[dict[str, Any]]:
    """Page links: the first, the last and a window around the current one (None: a gap)."""
    last = page.paginator.num_pages
    shown = {1, last, *range(page.number - FEED_PAGE_WINDOW, page.number + FEED_PAGE_WINDOW + 1)}
    links: list[dict[str, Any]] = []
    for n in sorted(x for x in shown if 1 <= x <= last):
        if links and n - links[-1]["n"] > 1:
            links.append({"n": None})
        links.append({"n": n, "query": filters.querystring(n), "current": n == page.number})
    return links if last > 1 else []


def convoy_feed(convoy: Convoy, rigs: list[Rig], filters: FeedFilters) -> dict[str, Any]:
    """The cascade feed of a convoy whose rigs are `rigs` (`cascades.feed.cascade_feed`: a fixed
    number of queries). A `feed_rig` that is not one of the convoy's rigs is a ValidationError
    naming the field (a 400, as for the board's filters)."""
    by_slug = {rig.slug: rig for rig in rigs}
    rig = None
    if filters.rig:
        rig = by_slug.get(filters.rig)
        if rig is None:
            known = ", ".join(sorted(by_slug)) or "none yet"
            raise ValidationError(
                {"feed_rig": f"no rig '{filters.rig[:63]}' works this convoy (its rigs: {known})."}
            )
    feed = cascade_feed(
        rig_ids=[r.id for r in rigs],
        since=convoy.created_at,
        merge_request_ids=[convoy.landing_merge_request_id or 0],
        rig_id=rig.id if rig else None,
        kind=filters.kind,
        page=filters.page,
    )
    page = feed.page
    current = FeedFilters(filters.rig, filters.kind, page.number)
    return {
        "feed": feed,
        "feed_filters": current,
        "feed_query": current.querystring(),
        "feed_pages": _feed_pages(current, page),
        "feed_prev": current.querystring(page.number - 1) if page.has_previous() else None,
        "feed_next": current.querystring(page.number + 1) if page.has_next() else None,
        "feed_rigs": sorted(by_slug),
        "feed_kinds": Notification.Kind.choices,
    }


def convoy_feed_page(convoy_id: int, filters: FeedFilters) -> dict[str, Any]:
    """The feed alone (the convoy page's live fragment for it): the convoy, its rigs, the feed."""
    convoy = get_object_or_404(Convoy, pk=convoy_id)
    rigs = list(Rig.objects.filter(legs__convoy=convoy).distinct().order_by("slug"))
    return {"convoy": convoy, **convoy_feed(convoy, rigs, filters)}


def convoy_page(convoy_id: int, feed: FeedFilters | None = None) -> dict[str, Any]:
    """Legs with their rigs and merge requests, the wave graph, spend and running agents, and
    with `feed` the cascade feed (`convoy_feed`, six more queries). ~9 queries."""
    event_id = last_event_id()
    convoy = get_object_or_404(
        Convoy.objects.select_related("repository", "landing_merge_request", "created_by"),
        pk=convoy_id,
    )
    rollup = convoy_rollup(convoy)
    legs = list(
        Leg.objects.filter(convoy=convoy)
        .select_related("rig", "rig__agent", "rig__repository", "agent", "landed_merge_request")
        .annotate(latest_mr=_latest_merge_request_id())
        .order_by("position", "id")
    )
    merge_requests = MergeRequest.objects.in_bulk([leg.latest_mr for leg in legs if leg.latest_mr])
    info = {item["id"]: item for item in rollup["legs"]}
    blocked = {item["id"]: item["reasons"] for item in rollup["blocked"]}
    # ahead/behind read from git now, one batch for the page (the last sync's if it cannot be)
    positions = rig_positions({leg.rig_id: leg.rig for leg in legs if leg.rig}.values())
    rows = []
    for leg in legs:
        leg.convoy = convoy
        mr = merge_requests.get(leg.latest_mr)
        landed = leg.state == Leg.State.LANDED
        rows.append(
            {
                "leg": leg,
                "rig": leg.rig,
                "agent": (leg.rig.agent if leg.rig and leg.rig.agent else leg.agent),
                "wave": info[leg.id]["wave"],
                "depends_on": info[leg.id]["depends_on"],
                "blocked": blocked.get(leg.id, []),
                "merge_request": mr,
                # a landed leg shows where it landed, not counts against a target that moved on
                "landed": landed,
                "landed_in": leg.landed_merge_request.merge_commit
                if landed and leg.landed_merge_request
                else "",
                "position": positions.get(leg.rig_id),
                "heartbeat": age(leg.rig.last_heartbeat_at) if leg.rig else "",
                "can_merge": bool(
                    leg.rig
                    and leg.rig.state in Rig.LIVE_STATES
                    and leg.state in Leg.MOVING_STATES
                    and not (mr and mr.is_active)
                ),
                "can_retry": bool(leg.rig and leg.rig.state == Rig.State.FAILED),
            }
        )
    rig_ids = [leg.rig_id for leg in legs if leg.rig_id]
    questions = list(asks_person().filter(rig_id__in=rig_ids).select_related("rig"))
    for row in rows:  # a leg whose agent ended its turn shows it (its notice is on the rig)
        row["turn_ended"] = next(
            (
                n
                for n in questions
                if n.rig_id == row["leg"].rig_id and n.topic == f"{TURN_PREFIX}:{row['leg'].id}"
            ),
            None,
        )
    feed_rigs = list({leg.rig_id: leg.rig for leg in legs if leg.rig}.values())
    landing = rollup["landing_merge_request"]
    return {
        "last_event_id": event_id,
        "convoy": convoy,
        "rollup": rollup,
        "rows": rows,
        "graph": wave_graph(rollup["legs"], rollup["waves"]),
        # the cascade feed (the full page; the feed's own live fragment is `convoy_feed_page`)
        **(convoy_feed(convoy, feed_rigs, feed) if feed is not None else {}),
        "questions": questions,
        "spend": Spend.of(convoy),
        "running": AgentRun.objects.filter(
            convoy=convoy, state__in=AgentRun.PROCESS_STATES
        ).count(),
        "age": age(convoy.created_at),
        "groups": ",".join([f"convoy.{convoy.id}", *[f"rig.{r}" for r in sorted(set(rig_ids))]]),
        "can_launch": convoy.state == S.DRAFT,
        "can_cancel": convoy.state not in (S.LANDED, S.CANCELLED),
        "can_retry_landing": bool(
            convoy.state == S.BLOCKED
            and landing
            and landing["state"] not in MergeRequest.ACTIVE_STATES
        ),
    }


# --- the rig page ------------------------------------------------------------------------------

BEAD_LIMIT = 300


def _gate_estimate(repository: Repository) -> float | None:
    """Typical gate time of this repository (median of the last ten), for the gate's bar."""
    recent = list(
        MergeRequest.objects.filter(repository=repository, gate_seconds__isnull=False)
        .order_by("-finished_at")
        .values_list("gate_seconds", flat=True)[:10]
    )
    return statistics.median(recent) if recent else None


def merge_request_row(mr: MergeRequest, now: datetime, estimate: float | None = None) -> dict:
    waited = _between(mr.created_at, mr.started_at or (None if mr.finished_at else now))
    row = {
        "mr": mr,
        "age": age(mr.created_at, now),
        "waited": duration(waited),
        "gate": duration(mr.gate_seconds),
        "total": duration(_between(mr.created_at, mr.finished_at)),
        "running": duration(_between(mr.started_at, now)) if mr.is_active else "",
        "gate_percent": None,
    }
    if mr.state == MergeRequest.State.TESTING and mr.started_at:
        elapsed = _between(mr.started_at, now) or 0.0
        limit = estimate or float(mr.repository.gate_timeout_seconds or 600)
        row["gate_percent"] = min(95, round(100 * elapsed / max(limit, 1.0)))
    return row


RUN_LIMIT = 10


def run_row(run: AgentRun, now: datetime) -> dict[str, Any]:
    live = run.state in AgentRun.PROCESS_STATES
    waits = run.state == AgentRun.State.QUEUED and run.not_before and run.not_before > now
    return {
        "run": run,
        "ran": duration(_between(run.started_at, run.finished_at or (now if live else None))),
        "exit": run_services.exit_description(run.exit_code) if run.exit_code is not None else "",
        "cost": money(run.cost_usd),
        "waits_until": run.not_before if waits else None,
        "stopping": live and run.stop_requested_at is not None,
    }


def launch_refusal(rig: Rig, leg: Leg | None) -> str:
    """Why the rig's agent cannot be launched now ('' when it can), in `agent_run_request`'s
    words (a rig whose work is finished included); an active run is told apart by the page (it
    shows a Stop button instead)."""
    finished = rig_finished_work(rig, leg) if leg is None else None
    convoy = leg.convoy if leg is not None else None
    refusal = run_services.agent_run_refusal(rig, convoy, finished)
    return refusal.message if refusal is not None else ""


def _runs_context(rig: Rig, leg: Leg | None, now: datetime) -> dict[str, Any]:
    """The rig's last runs (one query), the run whose log the page follows, the escalation."""
    runs = run_selectors.runs_for_rig(rig, RUN_LIMIT)
    # One active run per rig at most, and nothing is queued beside it: it is the newest.
    active = runs[0] if runs and runs[0].is_active else None
    escalated = None
    for n, run in enumerate(runs):
        if run.state == AgentRun.State.FAILED:
            later = runs[:n]
            moved_on = any(r.is_active or r.state == AgentRun.State.SUCCEEDED for r in later)
            escalated = run if run.escalated_at and not moved_on else None
            break
    refusal = launch_refusal(rig, leg)
    return {
        "runs": [run_row(run, now) for run in runs],
        "active_run": active,
        "log_run": runs[0] if runs else None,
        "escalated_run": escalated,
        "runtime_command": run_services.agent_runtime_command(rig.agent) if rig.agent else "",
        "launch_refusal": refusal,
        "can_launch": active is None and not refusal,
    }


def rig_page(rig_id: int) -> dict[str, Any]:
    """Worktree, changed files, the bead graph, the inbox, merge requests, agent runs.
    ~13 queries."""
    event_id = last_event_id()
    rig = get_object_or_404(Rig.objects.select_related("repository", "agent"), pk=rig_id)
    now = timezone.now()
    beads = list(
        Bead.objects.filter(rig=rig)
        .select_related("assignee")
        .order_by("priority", "created_at", "id")[:BEAD_LIMIT]
    )
    ready = set(beads_ready(rig=rig).values_list("id", flat=True))
    blockers: dict[int, list[str]] = defaultdict(list)
    for bead_id, short_id, status, kind in BeadDependency.objects.filter(
        bead__in=[b.id for b in beads],
        type__in=BeadDependency.BLOCKING_TYPES,
        depends_on__status__in=[s for s in Bead.Status.values if s != Bead.Status.CLOSED],
    ).values_list("bead_id", "depends_on__short_id", "depends_on__status", "type"):
        relation = "child of" if kind == BeadDependency.Type.PARENT_CHILD else "blocked by"
        blockers[bead_id].append(f"{relation} {short_id} ({status})")
    comments: dict[int, list[BeadComment]] = defaultdict(list)  # `gt comment`, oldest first
    for comment in BeadComment.objects.filter(bead__in=[b.id for b in beads]).order_by(
        "created_at", "id"
    ):
        comments[comment.bead_id].append(comment)
    lanes: dict[str, list[dict]] = {"ready": [], "in_progress": [], "blocked": [], "closed": []}
    for bead in beads:
        item = {"bead": bead, "why": blockers.get(bead.id, []), "lease": lease_text(bead, now)}
        item["comments"] = comments.get(bead.id, [])
        if bead.status == Bead.Status.CLOSED:
            lanes["closed"].append(item)
        elif bead.status == Bead.Status.IN_PROGRESS:
            lanes["in_progress"].append(item)
        elif bead.id in ready:
            lanes["ready"].append(item)
        else:
            if not item["why"]:
                item["why"] = [
                    f"deferred until {bead.defer_until:%Y-%m-%d %H:%M}"
                    if bead.defer_until and bead.defer_until > now
                    else f"status {bead.status}"
                ]
            lanes["blocked"].append(item)
    lanes["closed"].sort(key=lambda i: i["bead"].closed_at or i["bead"].updated_at, reverse=True)

    merge_requests = list(
        rig.merge_requests.select_related("repository").order_by("-created_at", "-id")[:20]
    )
    testing = any(mr.state == MergeRequest.State.TESTING for mr in merge_requests)
    estimate = _gate_estimate(rig.repository) if testing else None
    inbox = list(
        # open first, then the newest
        rig.notifications.select_related("source_rig").order_by(
            F("resolved_at").asc(nulls_first=True),
            F("acked_at").asc(nulls_first=True),
            "-updated_at",
            "-id",
        )[:50]
    )
    files = list(rig.changed_files or [])
    biggest = max((f.get("added", 0) + f.get("deleted", 0) for f in files), default=0) or 1
    for f in files:
        f["add_pct"] = round(100 * f.get("added", 0) / biggest)
        f["del_pct"] = round(100 * f.get("deleted", 0) / biggest)
    leg = rig_current_leg(rig)
    finished = rig_finished_work(rig, leg)  # its leg landed: no merge, no agent to launch
    active_mr = next((mr for mr in merge_requests if mr.is_active), None)
    position = rig_position(rig)  # head, ahead and behind from git now, else the last sync's
    return {
        "last_event_id": event_id,
        "rig": rig,
        "leg": leg,
        "finished": finished,
        "finished_text": finished.text() if finished else "",
        "position": position,
        "dirty_as_of": RigPosition("", 0, 0, rig.last_synced_at, False).as_of,
        "merge_target": merge_target_for_rig(rig) if rig.state in Rig.LIVE_STATES else "",
        "lanes": [
            {"key": key, "label": label, "items": lanes[key]}
            for key, label in (
                ("ready", "Ready"),
                ("in_progress", "In progress"),
                ("blocked", "Blocked"),
                ("closed", "Closed"),
            )
        ],
        "bead_total": len(beads),
        "merge_requests": [merge_request_row(mr, now, estimate) for mr in merge_requests],
        "inbox": inbox,
        "questions": [n for n in inbox if n.is_open and n.kind in ASKS_PERSON_KINDS],
        "turn_ended": next(
            (n for n in inbox if n.is_open and n.topic.startswith(TURN_PREFIX)), None
        ),
        "unacked": sum(1 for n in inbox if n.asks_action),
        "open_notices": sum(1 for n in inbox if n.is_open),
        "files": files,
        "files_added": sum(f.get("added", 0) for f in files),
        "files_deleted": sum(f.get("deleted", 0) for f in files),
        "heartbeat": age(rig.last_heartbeat_at, now),
        "synced": age(rig.last_synced_at, now),
        "groups": f"rig.{rig.id}",
        "show_progress": rig.state in (Rig.State.REQUESTED, Rig.State.PROVISIONING)
        or (rig.state == Rig.State.FAILED and rig.progress < 100),
        "can_merge": rig.state in Rig.LIVE_STATES
        and rig.state != Rig.State.MERGING
        and active_mr is None
        and finished is None,
        "can_retry": rig.state == Rig.State.FAILED,
        "can_teardown": rig.state != Rig.State.ARCHIVED,
        "can_sync": rig.state in Rig.LIVE_STATES,
        **_runs_context(rig, leg, now),
    }


# --- the merge queue page ----------------------------------------------------------------------

RECENT_LIMIT = 50


def repositories_page() -> dict[str, Any]:
    """The repositories with their queues' counts, and where a new one may be added from
    (GASTOWN_REPOSITORY_ROOTS, shown beside the admins' "Add repository" form)."""
    M = MergeRequest.State
    repos = Repository.objects.annotate(
        queued=Count("merge_requests", filter=Q(merge_requests__state=M.QUEUED)),
        running=Count(
            "merge_requests", filter=Q(merge_requests__state__in=[M.CHECKING, M.TESTING])
        ),
        landed_day=Count(
            "merge_requests",
            filter=Q(
                merge_requests__state=M.MERGED,
                merge_requests__finished_at__gte=timezone.now() - timedelta(days=1),
            ),
        ),
    ).order_by("name")
    return {
        "last_event_id": last_event_id(),
        "repositories": list(repos),
        "repository_roots": ",".join(str(root) for root in settings.GASTOWN_REPOSITORY_ROOTS),
    }


def merge_queue_page(repository_id: int) -> dict[str, Any]:
    """One repository's queues: queued, batched (being checked), testing, landed, failed.
    Five queries."""
    event_id = last_event_id()
    repository = get_object_or_404(Repository, pk=repository_id)
    M = MergeRequest.State
    now = timezone.now()
    base = MergeRequest.objects.filter(repository=repository).select_related("rig", "repository")
    active = list(base.filter(state__in=MergeRequest.ACTIVE_STATES).order_by("priority", "id"))
    landed = list(base.filter(state=M.MERGED).order_by("-finished_at", "-id")[:RECENT_LIMIT])
    failed = list(
        base.filter(state__in=[M.FAILED, M.CONFLICTED]).order_by("-finished_at", "-id")[
            :RECENT_LIMIT
        ]
    )
    estimate = _gate_estimate(repository) if any(m.state == M.TESTING for m in active) else None

    def rows(items):
        return [merge_request_row(mr, now, estimate) for mr in items]

    batches: dict[str, list[MergeRequest]] = {}
    for mr in active:
        if mr.state == M.CHECKING:
            batches.setdefault(str(mr.batch_id or mr.id), []).append(mr)
    landed_seconds = [
        s for s in (_between(m.created_at, m.finished_at) for m in landed) if s is not None
    ]
    return {
        "last_event_id": event_id,
        "repository": repository,
        "queued": rows(m for m in active if m.state == M.QUEUED),
        "batches": [{"id": b[:8], "rows": rows(items)} for b, items in batches.items()],
        "batched_count": sum(len(items) for items in batches.values()),
        "testing": rows(m for m in active if m.state == M.TESTING),
        "landed": rows(landed),
        "failed": rows(failed),
        "median_landing": duration(statistics.median(landed_seconds)) if landed_seconds else "",
        "groups": f"repository.{repository.id}",
    }


# --- escalations: what asks a person ------------------------------------------------------------

ESCALATIONS_SHOWN = 100
ANSWERED_SHOWN = 20


def asks_person() -> QuerySet[Notification]:
    """The open notices that ask a person: escalations (an agent's question, a run that needs
    help) and ended turns (`gt done --status escalated|deferred`)."""
    return Notification.objects.filter(
        kind__in=ASKS_PERSON_KINDS, state=Notification.State.OPEN
    ).order_by("-created_at", "-id")


def escalations_count() -> int:
    """The board header's count (one query)."""
    return asks_person().count()


def escalations_page() -> dict[str, Any]:
    """Every open question to a person, newest first, with its rig, repository and convoy, and
    the last ones answered. Three queries."""
    event_id = last_event_id()
    questions = list(
        asks_person().select_related("rig", "rig__repository", "rig__agent")[:ESCALATIONS_SHOWN]
    )
    legs = rigs_current_legs({n.rig_id for n in questions}, dependencies=False)
    answered = list(
        Notification.objects.filter(kind__in=ASKS_PERSON_KINDS)
        .exclude(state=Notification.State.OPEN)
        .select_related("rig")
        .order_by("-updated_at", "-id")[:ANSWERED_SHOWN]
    )
    return {
        "last_event_id": event_id,
        "questions": [{"note": n, "leg": legs.get(n.rig_id)} for n in questions],
        "answered": answered,
        "groups": "board",
        "nav": "escalations",
    }


# --- budgets -----------------------------------------------------------------------------------

BUDGETS_SHOWN = 200


def budget_row(limit: Limit) -> dict[str, Any]:
    """One limit as the Budgets page shows it: its figures, a bar, what it does now."""
    cap = limit.cap()
    return {
        "limit": limit,
        "budget": limit.budget,
        "bar": min(100, limit.percent),
        "cap": cap,
        "halved": limit.level == Budget.Level.WARNING,
        "usd": f"{money(limit.spent_usd)} of {money(limit.limit_usd)}"
        if limit.limit_usd is not None
        else "",
        "tokens": f"{limit.spent_tokens:,} of {limit.limit_tokens:,} tokens"
        if limit.limit_tokens is not None
        else "",
    }


def budgets_page() -> dict[str, Any]:
    """Every budget with its spend over its window (one aggregate query), the convoys' own
    budgets, and what the "Set a limit" form can name. Six queries."""
    event_id = last_event_id()
    budgets = list(
        Budget.objects.select_related("agent", "repository", "convoy").order_by("scope", "id")[
            :BUDGETS_SHOWN
        ]
    )
    convoys = list(
        Convoy.objects.filter(state__in=OPEN_STATES).order_by("-created_at")[:BUDGETS_SHOWN]
    )
    limits = limits_of(budgets, convoys)
    agents = list(Agent.objects.filter(is_active=True).order_by("name").values_list("id", "name"))
    repositories = list(Repository.objects.order_by("name").values_list("id", "name"))
    targets = [
        ("Agents", [(f"agent:{pk}", name) for pk, name in agents]),
        ("Repositories", [(f"repository:{pk}", name) for pk, name in repositories]),
        ("Convoys", [(f"convoy:{c.pk}", c.title) for c in convoys]),
    ]
    return {
        "last_event_id": event_id,
        "rows": [budget_row(limit) for limit in limits if limit.budget is not None],
        "convoy_rows": [budget_row(limit) for limit in limits if limit.budget is None],
        "targets": targets,
        "machine_cap": settings.GASTOWN_MAX_AGENTS,
        "grace": settings.GASTOWN_BUDGET_GRACE_SECONDS,
        "groups": "board",
        "nav": "budgets",
    }
