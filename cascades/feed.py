"""The cascade feed: what each landed merge set off, one card per merge, in a fixed number of
queries (the board's convoy page shows it).

A card holds one merge request's own consequences only: what it changed, who its cascade told
what (the notice versions it caused, `NotificationVersion.merge_request`, grouped by rig: a
notice updated in place by later landings shows in each of their cards as that landing left
it), and the follow-up beads made for it. A change made in answer to a notification continues
that cascade one level deeper (`cascades.landed._cascade_of`), so the card of the merge that
started a cascade (depth 0) also shows the cascade's whole chain as a tree; the card of a merge
deeper in the chain says which cascade it continues. Notices with no landed merge behind them
(the overlap radar, assignments, refused merges) are "other notices", kept apart from the
cards.

Queries, whatever the number of cards: the cards' count and page, every notice version of the
page's cascades, the page's follow-up beads, and the other notices' count and rows.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Exists, F, OuterRef, Q, QuerySet

from convoys.models import Bead
from notifications.models import Notification, NotificationVersion
from rigs.models import MergeRequest, Rig

PER_PAGE = 10
OTHER_LIMIT = 20  # "other notices" shown (the newest); the rest are counted
FILES_SHOWN = 12  # changed files listed on a card; the rest are counted
TREE_NOTICE_LIMIT = 2000  # notices read for one page of cascade trees (a hundred rigs, deep)


@dataclass
class Told:
    """What one rig was told by one merge."""

    rig: Rig
    notices: list[NotificationVersion]

    @property
    def asks_action(self) -> int:
        """Of what it was told, how much still asks for an action now."""
        return sum(1 for n in self.notices if n.asks_action)


@dataclass
class TreeNode:
    """One step of a cascade: the merge at `depth` and whom it told. `level` is the indentation
    (the number of steps above it in the tree)."""

    depth: int
    level: int
    merge_request: MergeRequest | None
    source_rig: Rig | None
    when: datetime
    told: list[Told]
    current: bool  # the merge of the card the tree is shown in


@dataclass
class FeedCard:
    merge_request: MergeRequest
    range: str
    files: list[dict[str, Any]]
    more_files: int
    told: list[Told]  # the notices that match the feed's filters, grouped by rig
    notice_total: int  # all of this merge's notices
    notice_shown: int
    asks_action: int
    beads: list[Bead]
    cascade_depth: int | None  # the depth this merge's notices are at (None: told nobody)
    continues: int | None  # the merge request that started the cascade this one continues
    tree: list[TreeNode] = field(default_factory=list)
    open: bool = False

    @property
    def dom_id(self) -> str:
        return f"feed-mr-{self.merge_request.id}"


@dataclass
class Feed:
    cards: list[FeedCard]
    page: Page
    total: int
    other: list[Notification]
    other_total: int


def _group_by_rig(notices: Iterable[NotificationVersion]) -> list[Told]:
    groups: dict[int, Told] = {}
    for note in notices:
        groups.setdefault(note.rig_id, Told(note.rig, [])).notices.append(note)
    told = list(groups.values())
    told.sort(key=lambda t: (-t.asks_action, t.rig.slug))
    return told


def _range_of(mr: MergeRequest, notices: list[NotificationVersion]) -> str:
    commits = next((n.source_commits for n in notices if n.source_commits), "")
    old, _, new = commits.partition("..")
    if not new and mr.target_commit and mr.merge_commit:
        old, new = mr.target_commit, mr.merge_commit
    return f"{old[:10]}..{new[:10]}" if new else ""


def _files_of(mr: MergeRequest, notices: list[NotificationVersion]) -> list[dict[str, Any]]:
    """The merge's changed paths, with the line counts its notices carry where they have them."""
    stats: dict[str, dict[str, Any]] = {}
    for note in notices:
        for item in (note.changes or {}).get("files") or []:
            if isinstance(item, dict) and item.get("path"):
                stats.setdefault(str(item["path"]), item)
    paths = [str(p) for p in (mr.changed_paths or [])] or sorted(stats)
    return [stats.get(p) or {"path": p} for p in paths]


def _tree(cascade_notices: list[NotificationVersion], current_id: int) -> list[TreeNode]:
    """The cascade as a tree, flattened in display order. A step is one merge's notices at one
    depth; its parent is the step one level up that told the merge's rig (the notice it
    answered), or else the first step one level up."""
    steps: dict[tuple[int, int | None], list[NotificationVersion]] = defaultdict(list)
    for note in cascade_notices:
        steps[(note.depth, note.source_merge_request_id)].append(note)
    ordered = sorted(steps, key=lambda k: (k[0], min(n.created_at for n in steps[k]), k[1] or 0))
    children: dict[tuple[int, int | None] | None, list[tuple[int, int | None]]] = defaultdict(list)
    for key in ordered:
        depth, _ = key
        first = steps[key][0]
        source_rig = first.source_merge_request.rig_id if first.source_merge_request else None
        source_rig = source_rig or first.source_rig_id
        above = [k for k in ordered if k[0] == depth - 1]
        parent = next(
            (k for k in above if any(n.rig_id == source_rig for n in steps[k])),
            above[0] if above else None,
        )
        children[parent].append(key)
    flat: list[TreeNode] = []

    def walk(key: tuple[int, int | None], level: int) -> None:
        notes = steps[key]
        first = notes[0]
        mr = first.source_merge_request
        flat.append(
            TreeNode(
                depth=key[0],
                level=level,
                merge_request=mr,
                source_rig=(mr.rig if mr and mr.rig_id else first.source_rig),
                when=min(n.created_at for n in notes),
                told=_group_by_rig(notes),
                current=key[1] == current_id,
            )
        )
        for child in children.get(key, []):
            walk(child, level + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return flat


def _matches(note: NotificationVersion, mr: MergeRequest, rig_id: int | None, kind: str) -> bool:
    if kind and note.kind != kind:
        return False
    return not rig_id or note.rig_id == rig_id or mr.rig_id == rig_id


def feed_merge_requests(
    *,
    rig_ids: list[int],
    since: datetime,
    merge_request_ids: Iterable[int] = (),
    rig_id: int | None = None,
    kind: str = "",
) -> QuerySet[MergeRequest]:
    """The landed merge requests the feed shows, newest first: the rigs' own (landed since
    `since`), those whose cascade told one of the rigs since then, and `merge_request_ids` (a
    convoy's landing). With `kind`, those that sent a notice of that kind; with `rig_id`, those
    that told that rig (something of `kind`) or are that rig's own."""
    told_ours = NotificationVersion.objects.filter(
        rig_id__in=rig_ids, created_at__gte=since, merge_request__isnull=False
    ).values("merge_request_id")
    wanted = Q(rig_id__in=rig_ids, finished_at__gte=since) | Q(id__in=told_ours)
    extra = [i for i in merge_request_ids if i]
    if extra:
        wanted |= Q(id__in=extra)
    qs = MergeRequest.objects.filter(wanted, state=MergeRequest.State.MERGED)
    sent = NotificationVersion.objects.filter(merge_request=OuterRef("pk"))
    if kind:
        sent = sent.filter(kind=kind)
    if rig_id:
        # it told the rig (something of that kind), or it is the rig's (and sent that kind)
        mine = Q(rig_id=rig_id) & (Exists(sent) if kind else Q())
        qs = qs.filter(mine | Exists(sent.filter(rig_id=rig_id)))
    elif kind:
        qs = qs.filter(Exists(sent))
    return qs.select_related("rig").order_by(
        F("finished_at").desc(nulls_last=True), "-created_at", "-id"
    )


def other_notices(
    *, rig_ids: list[int], since: datetime, rig_id: int | None = None, kind: str = ""
) -> QuerySet[Notification]:
    """Notices to the rigs with no landed merge behind them (overlap radar, assignments,
    refused merges), newest first."""
    qs = Notification.objects.filter(rig_id__in=rig_ids, created_at__gte=since).filter(
        Q(source_merge_request__isnull=True)
        | ~Q(source_merge_request__state=MergeRequest.State.MERGED)
    )
    if rig_id:
        qs = qs.filter(rig_id=rig_id)
    if kind:
        qs = qs.filter(kind=kind)
    return qs.select_related("rig", "source_rig").order_by("-created_at", "-id")


def cascade_feed(
    *,
    rig_ids: list[int],
    since: datetime,
    merge_request_ids: Iterable[int] = (),
    rig_id: int | None = None,
    kind: str = "",
    page: int = 1,
    per_page: int = PER_PAGE,
) -> Feed:
    """One page of the feed (a page past the last shows the last). Six queries at most, however
    many cards, notices and beads."""
    merges = feed_merge_requests(
        rig_ids=rig_ids, since=since, merge_request_ids=merge_request_ids, rig_id=rig_id, kind=kind
    )
    paginator = Paginator(merges, per_page)
    current = paginator.get_page(page)  # count, then the page's rows
    page_mrs = list(current.object_list)
    ids = [mr.id for mr in page_mrs]

    cascade_notices: list[NotificationVersion] = []
    beads: list[Bead] = []
    if ids:
        cascades = NotificationVersion.objects.filter(merge_request_id__in=ids).values("cascade")
        cascade_notices = list(
            NotificationVersion.objects.filter(cascade__in=cascades)
            .select_related("rig", "notification", "merge_request__rig")
            .order_by("depth", "created_at", "id")[:TREE_NOTICE_LIMIT]
        )
        beads = list(
            Bead.objects.filter(discovered_from_merge_request_id__in=ids)
            .select_related("rig")
            .order_by("created_at", "id")
        )
    by_cascade: dict[Any, list[NotificationVersion]] = defaultdict(list)
    own: dict[int, list[NotificationVersion]] = defaultdict(list)
    for note in cascade_notices:
        by_cascade[note.cascade].append(note)
        if note.source_merge_request_id in ids:
            own[note.source_merge_request_id].append(note)
    beads_of: dict[int, list[Bead]] = defaultdict(list)
    for bead in beads:
        beads_of[bead.discovered_from_merge_request_id].append(bead)

    cards = []
    for mr in page_mrs:
        notices = own.get(mr.id, [])
        shown = [n for n in notices if _matches(n, mr, rig_id, kind)]
        files = _files_of(mr, notices)
        depth = min((n.depth for n in notices), default=None)
        card = FeedCard(
            merge_request=mr,
            range=_range_of(mr, notices),
            files=files[:FILES_SHOWN],
            more_files=max(0, len(files) - FILES_SHOWN),
            told=_group_by_rig(shown),
            notice_total=len(notices),
            notice_shown=len(shown),
            asks_action=sum(1 for n in notices if n.asks_action),
            beads=beads_of.get(mr.id, []),
            cascade_depth=depth,
            continues=None,
        )
        chain = by_cascade.get(notices[0].cascade, []) if notices else []
        if depth == 0 and any(n.depth > 0 for n in chain):
            card.tree = _tree(chain, mr.id)
        elif depth:
            card.continues = next(
                (n.source_merge_request_id for n in chain if n.depth == 0),
                None,
            )
        cards.append(card)
    if cards and current.number == 1:
        cards[0].open = True  # the newest merge is open; the others are one line each

    others = other_notices(rig_ids=rig_ids, since=since, rig_id=rig_id, kind=kind)
    other_total = others.count()
    return Feed(
        cards=cards,
        page=current,
        total=paginator.count,
        other=list(others[:OTHER_LIMIT]) if other_total else [],
        other_total=other_total,
    )
