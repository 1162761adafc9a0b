"""Trigger 2, a rig's branch moved: the overlap radar. Two live rigs that change the same file
are not in conflict yet; the radar says whether merging their tips would conflict, and where,
before either of them lands.

Runs in a Celery task (`cascades.tasks.cascade_overlap`), enqueued by the transaction that
recorded the rig's sync for after its commit (`cascade_overlap_later`): git is read through
`rigs.landing.overlap_forecasts`, never here, and never inside a transaction. One run
re-evaluates every pair of the rig whose branch moved:

1. candidates, without git: the rigs `cascade_audience` may tell whose stored changed files
   meet this rig's, or whose watch patterns match what the other changes;
2. for the pairs that change the same files, the line-level forecast of the two branch tips
   (at most `MAX_PAIRS` pairs per run, those sharing the most files first; at most
   `rigs.landing.OVERLAP_FILES_MAX` files per pair, the conflicting ones first);
3. in one transaction: each rig's one notice per partner (kind `overlap`, topic
   `overlap:<partner id>`), opened or updated in place, and the resolution of the pairs that
   overlap no more, on both sides.

What a rig is told about a partner:
- their tips conflict: a warning, "will conflict in F lines 10-24", both sides' hunks in
  `changes["conflicts"]`;
- they change the same files and git merges them cleanly: information, "same file, different
  places";
- the partner changes files this rig watches (not the same files): information, to the watcher
  only, "X is changing files you watch".
A pair over `MAX_PAIRS` keeps what it was told (or, told nothing yet, hears the shared files
without lines); a pair git could not compare (a branch gone) keeps what it was told.
"""

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from django.db import transaction

from cascades import tasks, topics
from cascades.selectors import cascade_audience
from cascades.watch import path_matches, rig_watch_patterns
from convoys.models import Leg
from notifications.models import Notification
from notifications.selectors import notices_open
from notifications.services import notices_resolve, notifications_send_many
from rigs import landing
from rigs.landing import FileOverlap, OverlapForecast
from rigs.models import Rig

K = Notification.Kind
SEV = Notification.Severity
MAX_PAIRS = 50  # pairs forecast with git per run; see the module's docstring
LISTED = 5  # files named in a summary; `changes` has them all
DASH = "\u2013"  # an en dash: "lines 10-24" reads with it


def _paths_of(rig: Rig) -> set[str]:
    return {f.get("path") for f in rig.changed_files or [] if isinstance(f, dict) and f.get("path")}


@dataclass
class _Pair:
    """The rig whose branch moved and one partner, as their syncs stored them."""

    other: Rig
    leg: Leg | None
    shared: list[str]  # files both change
    i_watch: list[str]  # files the partner changes that the rig watches (not shared)
    they_watch: list[str]  # files the rig changes that the partner watches (not shared)
    forecast: OverlapForecast | None = None
    over_limit: bool = False  # shares files but was not forecast: over MAX_PAIRS
    unknown: bool = False  # git could not compare the tips (a branch gone)
    told: dict[int, dict[str, Any]] = field(default_factory=dict)  # recipient id: notice


def cascade_overlap_later(*, rig: Rig) -> None:
    """Enqueue `cascade_overlap` for after the sync's transaction commits (git is never read
    inside one)."""
    rig_id = rig.id
    transaction.on_commit(lambda: tasks.cascade_overlap.delay(rig_id))


def cascade_overlap(*, rig_id: int) -> list[Notification]:
    """Re-evaluate every overlap of one rig with the other rigs a cascade may tell, from their
    branch tips; tell both sides of each pair its state now and resolve the pairs whose overlap
    is gone. Returns the pairs' notices, as they are now (written or unchanged)."""
    rig = Rig.objects.select_related("repository").filter(pk=rig_id).first()
    if rig is None:
        return []
    audience = cascade_audience(repository_id=rig.repository_id)
    me = next(((r, leg) for r, leg in audience if r.id == rig.id), None)
    if me is None:  # finished, ended or not at work: nobody overlaps with it any more
        with transaction.atomic():
            _resolve_gone(rig, [], why=f"{rig.slug} has no work left to do ({rig.state})")
        return []
    rig, my_leg = me
    pairs = _candidates(rig, my_leg, [(r, leg) for r, leg in audience if r.id != rig.id])
    sharing = sorted((p for p in pairs if p.shared), key=lambda p: (-len(p.shared), p.other.id))
    for pair in sharing[MAX_PAIRS:]:
        pair.over_limit = True
    compared = sharing[:MAX_PAIRS]
    forecasts = landing.overlap_forecasts(rig=rig, partners=[(p.other, p.shared) for p in compared])
    for pair in compared:
        pair.forecast = forecasts.get(pair.other.id)
        pair.unknown = pair.forecast is None
    with transaction.atomic():
        # Under lock, what each pair was told: its cascade id is kept, and a pair over the
        # limit that already has a notice keeps it as it is.
        open_notices = notices_open(
            rig_ids=[rig.id, *(p.other.id for p in pairs)],
            topics=[topics.overlap(rig.id), *(topics.overlap(p.other.id) for p in pairs)],
            lock=True,
        )
        items = []
        for pair in pairs:
            mine = open_notices.get(rig.id, {}).get(topics.overlap(pair.other.id))
            theirs = open_notices.get(pair.other.id, {}).get(topics.overlap(rig.id))
            if pair.unknown or (pair.over_limit and (mine or theirs)):
                continue  # kept as it is (see `_resolve_gone`)
            cascade = (mine or theirs).cascade if (mine or theirs) else uuid.uuid4()
            for recipient, leg, partner, partner_leg, flip in (
                (rig, my_leg, pair.other, pair.leg, False),
                (pair.other, pair.leg, rig, my_leg, True),
            ):
                notice = _notice(pair, partner, partner_leg, flip)
                if notice is None:
                    continue
                pair.told[recipient.id] = notice
                items.append(
                    {
                        "rig": recipient,
                        "kind": K.OVERLAP,
                        "topic": topics.overlap(partner.id),
                        "source_rig": partner,
                        "cascade": cascade,
                        "convoy_id": leg.convoy_id if leg else None,
                        **notice,
                    }
                )
        sent = notifications_send_many(items)
        _resolve_gone(rig, pairs)
    return sent


def _candidates(rig: Rig, leg: Leg | None, others: list[tuple[Rig, Leg | None]]) -> list[_Pair]:
    """The partners whose stored changes meet the rig's: the same files, or watched ones."""
    mine = _paths_of(rig)
    my_watch = rig_watch_patterns(rig, leg)
    pairs = []
    for other, other_leg in others:
        theirs = _paths_of(other)
        shared = mine & theirs
        their_watch = rig_watch_patterns(other, other_leg)
        i_watch = sorted(p for p in theirs - shared if path_matches(p, my_watch))
        they_watch = sorted(p for p in mine - shared if path_matches(p, their_watch))
        if shared or i_watch or they_watch:
            pairs.append(_Pair(other, other_leg, sorted(shared), i_watch, they_watch))
    return pairs


def _resolve_gone(rig: Rig, pairs: list[_Pair], why: str = "") -> int:
    """Resolve, on both sides, the overlap notices of `rig` that this run did not renew, except
    the pairs it could not compare; `why` says why when it is not that the overlap is gone."""
    kept = {p.other.id for p in pairs if (p.unknown or p.over_limit) and not p.told}
    renewed_mine = {p.other.id for p in pairs if rig.id in p.told} | kept
    renewed_theirs = {p.other.id for p in pairs if p.other.id in p.told} | kept
    gone: dict[str, list[int]] = {}
    for pk, changes in (
        Notification.objects.filter(
            rig=rig, state=Notification.State.OPEN, topic__startswith=topics.OVERLAP_PREFIX
        )
        .exclude(topic__in=[topics.overlap(i) for i in renewed_mine])
        .values_list("id", "changes")
    ):
        gone.setdefault((changes or {}).get("rig") or "the other rig", []).append(pk)
    count = 0
    for slug, ids in sorted(gone.items()):
        count += notices_resolve(
            notifications=Notification.objects.filter(pk__in=ids),
            resolution=why or f"the overlap with {slug} is gone: no file you both change or watch",
        )
    return count + notices_resolve(
        notifications=Notification.objects.filter(topic=topics.overlap(rig.id)).exclude(
            rig_id__in=renewed_theirs
        ),
        resolution=why or f"the overlap with {rig.slug} is gone: no file you both change or watch",
    )


def _files(paths: list[str]) -> str:
    more = f" and {len(paths) - LISTED} more" if len(paths) > LISTED else ""
    return ", ".join(paths[:LISTED]) + more


def _lines(spans: list) -> str:
    """`[[10, 24], [40, 40]]` as "lines 10-24, 40" (with an en dash)."""
    parts = [f"{a}" if a == b else f"{a}{DASH}{b}" for a, b in spans]
    if not parts:
        return ""
    return ("line " if len(parts) == 1 and DASH not in parts[0] else "lines ") + ", ".join(parts)


def _where(f: FileOverlap) -> str:
    """Where both sides change one conflicting file, for a sentence."""
    if f.created:
        return f"{f.path} (both of you create it)"
    if f.together:
        return f"{_lines(f.together)} of {f.path}"
    return f.path


def _notice(
    pair: _Pair, partner: Rig, partner_leg: Leg | None, flip: bool
) -> dict[str, Any] | None:
    """What one side of a pair is told about its partner now (`flip`: the side is the
    partner of the rig whose branch moved), as `notifications_send_many` fields; None for
    nothing."""
    other = partner.slug
    leg = f" (leg '{partner_leg.title}')" if partner_leg else ""
    watched = pair.they_watch if flip else pair.i_watch
    forecast = pair.forecast
    base = {"rig": other, "rig_id": partner.id, "leg": partner_leg.title if partner_leg else None}
    if pair.over_limit:  # never told yet (else it keeps what it was told)
        return {
            "severity": SEV.INFO,
            "summary": f"Overlap with {other}{leg}: you both change {_files(pair.shared)} "
            "(lines not compared yet)",
            "action": f"Nothing to do now; Gas Town compares at most {MAX_PAIRS} rigs per sync "
            "and will say where when it compares these.",
            "changes": {**base, "verdict": "unchecked", "same_files": pair.shared},
        }
    files = forecast.files if forecast else []
    same = [f.path for f in files] + (forecast.not_compared if forecast else [])
    if forecast and forecast.conflicts:
        compared = {f.path: f for f in files}
        unseen = FileOverlap("", True, [], [], [], "", "")  # a conflict in a file not compared
        conflicting = [compared.get(p) or replace(unseen, path=p) for p in forecast.conflicts]
        first = conflicting[0]
        where = (
            f"{first.path} (both of you create it)"
            if first.created
            else f"{first.path} {_lines(first.together)}".strip()
        )
        more = f" and {len(conflicting) - 1} more file(s)" if len(conflicting) > 1 else ""
        places = " and ".join(_where(f) for f in conflicting[:3])
        return {
            "severity": SEV.WARNING,
            "summary": f"Overlap with {other}{leg}: will conflict in {where}{more}",
            "action": f"Coordinate with {other} now: you both change {places}; agree who "
            "changes them (gt inbox --json shows both hunks).",
            "changes": {
                **base,
                "verdict": "conflict",
                "files": [f.path for f in conflicting],
                "same_files": sorted(set(same) | set(forecast.conflicts)),
                "conflicts": [
                    {
                        "path": f.path,
                        "lines": [list(s) for s in f.together],
                        "mine": f.theirs_excerpt if flip else f.mine_excerpt,
                        "theirs": f.mine_excerpt if flip else f.theirs_excerpt,
                    }
                    for f in conflicting
                ],
                "watched": watched,
                "not_compared": forecast.not_compared,
            },
        }
    if same:
        clean_same_lines = any(f.together for f in files)
        what = "same lines, merged cleanly" if clean_same_lines else "same file, different places"
        return {
            "severity": SEV.INFO,
            "summary": f"Overlap with {other}{leg}: {what}: {_files(same)}",
            "action": f"Nothing to do now; {other} changes {_files(same)} too, and git merges "
            "both branches cleanly.",
            "changes": {
                **base,
                "verdict": "same_file",
                "files": same,
                "same_files": same,
                "places": [
                    {
                        "path": f.path,
                        "mine": [list(s) for s in (f.theirs if flip else f.mine)],
                        "theirs": [list(s) for s in (f.mine if flip else f.theirs)],
                    }
                    for f in files
                ],
                "watched": watched,
                "not_compared": forecast.not_compared if forecast else [],
            },
        }
    if watched:
        return {
            "severity": SEV.INFO,
            "summary": f"{other}{leg} is changing files you watch: {_files(watched)}; you will "
            "get 'interface changed' when it lands",
            "action": f"Nothing to do now; you will get 'interface changed' when {other} lands.",
            "changes": {**base, "verdict": "watched", "files": watched, "watched": watched},
        }
    return None
