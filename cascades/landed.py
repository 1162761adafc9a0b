"""Trigger 1, a merge landed: per other live rig on that target, a conflict forecast or "base
moved" (an idle, clean rig is rebased first when the repository allows it), "interface
changed" for watched paths, "dependencies changed" for manifests; plus follow-up beads where
the conceptual merge belongs (docs, tests, deployment).

Runs in a Celery task (`cascades.tasks.cascade_merge_landed`), enqueued by the landing's
transaction for after its commit (`cascade_merge_landed_later`). The landed change is read
through `rigs.landing` (three reads, plain data) and rebases are asked of `rigs.operations`;
this module decides who is told what, then writes every notification in one transaction.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cascades import tasks, topics
from cascades.follow_ups import cascade_follow_ups
from cascades.selectors import cascade_audience
from cascades.watch import (
    CODE_SUFFIXES,
    MANIFEST_PATTERNS,
    TEST_PATTERNS,
    path_matches,
    rig_watch_patterns,
)
from common.faults import fault_point
from convoys.models import Leg
from convoys.selectors import merge_target_for_rig
from notifications.models import Notification
from notifications.selectors import notices_open
from notifications.services import notices_resolve, notifications_send_many
from rigs import landing, operations
from rigs.landing import LandedChange
from rigs.models import MergeRequest, Repository, Rig

K = Notification.Kind
SEV = Notification.Severity

# Notifications that ask a rig to change its code; its next landing answers them.
ANSWERABLE_KINDS = [K.INTERFACE_CHANGED, K.DEPENDENCIES_CHANGED, K.ASSIGNED]
# Rig states in which nobody is at work in the worktree, so Gas Town may rebase it.
REBASABLE_STATES = (Rig.State.READY, Rig.State.MERGED)
TOPIC_BASE, TOPIC_INTERFACE, TOPIC_DEPENDENCIES = topics.BASE, topics.INTERFACE, topics.DEPENDENCIES
TOPICS = (TOPIC_BASE, TOPIC_INTERFACE, TOPIC_DEPENDENCIES)
LANDINGS_KEPT = 20  # the ranges a notice lists; older ones live in its revisions


def _cascade_of(rigs: list[Rig], merge_requests: list[MergeRequest]) -> tuple[uuid.UUID, int]:
    """A change made in answer to a notification continues that cascade one level deeper: the
    rig was asked to change its code and still had the notice open when it landed (this
    landing resolved it, see `cascades.answers`)."""
    landed_at = min((mr.finished_at for mr in merge_requests if mr.finished_at), default=None)
    answered = Q(state=Notification.State.OPEN)
    if landed_at is not None:
        answered |= Q(state=Notification.State.RESOLVED, resolved_at__gte=landed_at)
    notice = (
        Notification.objects.filter(answered, rig__in=rigs, kind__in=ANSWERABLE_KINDS)
        .order_by("-updated_at", "-id")
        .first()
    )
    if notice is not None:
        return notice.cascade, notice.depth + 1
    return uuid.uuid4(), 0


def _describe(sources: list[Rig], target_branch: str) -> str:
    names = ", ".join(sorted({r.slug for r in sources})) or "a branch"
    return f"{names} landed on {target_branch}"


def _rebase_idle(repository: Repository, rig: Rig, onto: str) -> bool:
    """Keep an idle, clean rig current for its agent (when the repository allows it): asked of
    the rig's own operation, which takes the rig's lock and records the sync."""
    if not repository.auto_rebase or rig.state not in REBASABLE_STATES or rig.dirty:
        return False
    return operations.rig_rebase_run(rig=rig, onto=onto)


@dataclass
class RigImpact:
    """What one landing means for one rig (read from git before any write)."""

    rig: Rig
    leg: Leg | None
    conflicts: list[str]
    behind: int
    watched: list[str]
    rebased: bool
    excerpt: str


def _clock(value: str | None) -> str:
    """HH:MM UTC of an ISO time kept in a notice's changes."""
    return value[11:16] if value and len(value) >= 16 else "?"


def _impact_notices(
    change: LandedChange,
    what: str,
    impact: RigImpact,
    manifests: list[str],
    open_notices: dict[str, Notification],
    now: str,
) -> tuple[list[dict[str, Any]], bool]:
    """The notices (as `notifications_send_many` items, each with its topic) one rig gets for
    one landing, built on the rig's open notices on the same topics (`open_notices`, by topic)
    so that each says the state now: one "base" notice with the distance and the conflict
    forecast, an "interface" and a "dependencies" notice that accumulate what landed since the
    rig last acted. Also whether the rig's base notice is answered (Gas Town rebased it)."""
    rig, new_tip, target = impact.rig, change.new_tip, change.target_branch
    notices = []
    base = open_notices.get(TOPIC_BASE)
    since = (base.changes.get("since") if base else None) or now
    landings = [*(base.changes.get("landings", []) if base else []), change.range][-LANDINGS_KEPT:]
    if impact.conflicts:
        files = ", ".join(impact.conflicts[:5])
        notices.append(
            {
                "kind": K.REBASE_NEEDED,
                "severity": SEV.WARNING,
                "topic": TOPIC_BASE,
                "summary": f"Rebase needed: {target} is {impact.behind} commit(s) ahead of you "
                f"({what}) and now conflicts with your work in {files}",
                "action": f"Rebase {rig.branch} onto {target} ({new_tip[:12]}) now and resolve "
                f"the conflicts in {', '.join(impact.conflicts)}.",
                "changes": {
                    "conflicts": impact.conflicts,
                    "target_commit": new_tip,
                    "behind": impact.behind,
                    "since": since,
                    "landings": landings,
                    "range": change.range,
                },
            }
        )
    elif not impact.rebased and impact.behind:
        notices.append(
            {
                "kind": K.BASE_MOVED,
                "severity": SEV.INFO,
                "topic": TOPIC_BASE,
                "summary": f"Your base moved: {impact.behind} commit(s) behind {target} since "
                f"{_clock(since)} UTC (latest: {what}); no conflict forecast",
                "action": f"Nothing urgent: rebase onto {target} ({new_tip[:12]}) when convenient.",
                "changes": {
                    "conflicts": [],
                    "behind": impact.behind,
                    "target_commit": new_tip,
                    "since": since,
                    "landings": landings,
                    "range": change.range,
                },
            }
        )
    if impact.watched:
        notices.append(_interface_notice(change, impact, open_notices.get(TOPIC_INTERFACE)))
    if manifests:
        earlier = open_notices.get(TOPIC_DEPENDENCIES)
        files = {f["path"]: f for f in (earlier.changes.get("files", []) if earlier else [])}
        files.update({f["path"]: f for f in change.file_stats(manifests)})
        ranges = [*(earlier.changes.get("ranges", []) if earlier else []), change.range]
        notices.append(
            {
                "kind": K.DEPENDENCIES_CHANGED,
                "severity": SEV.WARNING,
                "topic": TOPIC_DEPENDENCIES,
                "summary": f"Dependencies changed: {', '.join(sorted(files))}; reinstall",
                "action": "Rebase, then reinstall dependencies (for example the repository's "
                "setup command) before running tests.",
                "changes": {
                    "files": sorted(files.values(), key=lambda f: f["path"]),
                    "ranges": ranges[-LANDINGS_KEPT:],
                    "range": change.range,
                },
            }
        )
    return notices, impact.rebased


def _interface_notice(
    change: LandedChange, impact: RigImpact, earlier: Notification | None
) -> dict[str, Any]:
    """ "Interface changed", with what landed since the rig last acted on it (kept open until
    its next landing, or until it is acknowledged)."""
    old = earlier.changes if earlier else {}
    files = {f["path"]: f for f in old.get("files", [])}
    files.update({f["path"]: f for f in change.file_stats(impact.watched)})
    symbols = {p: list(s) for p, s in old.get("symbols", {}).items()}
    for path in impact.watched:
        known = symbols.setdefault(path, [])
        known += [s for s in change.symbols.get(path, []) if s not in known]
    ranges = [*old.get("ranges", []), change.range][-LANDINGS_KEPT:]
    names = sorted({s for listed in symbols.values() for s in listed})
    paths = sorted(files)
    named = f" ({', '.join(names[:6])})" if names else ""
    landings = f" in {len(ranges)} landings" if len(ranges) > 1 else ""
    return {
        "kind": K.INTERFACE_CHANGED,
        "severity": SEV.WARNING,
        "topic": TOPIC_INTERFACE,
        "summary": f"Interface changed{landings}: {', '.join(paths[:5])}{named}",
        "action": "Update your usage of the changed interface"
        + (f": {', '.join(names)}" if names else f" in {', '.join(paths)}")
        + ", then land it (gt done).",
        "changes": {
            "files": [files[p] for p in paths],
            "symbols": symbols,
            "excerpt": impact.excerpt or old.get("excerpt", ""),
            "ranges": ranges,
            "range": change.range,
        },
    }


def cascade_merge_landed_later(
    *,
    merge_requests: list[MergeRequest],
    repository: Repository,
    target_branch: str,
    old_tip: str | None,
    new_tip: str | None,
) -> None:
    """Enqueue `cascade_merge_landed` for after the landing commits (it reads git, which is
    never done inside a transaction); nothing when the target's tip did not move."""
    if old_tip and new_tip and old_tip != new_tip:
        ids = [mr.id for mr in merge_requests]
        transaction.on_commit(
            lambda: tasks.cascade_merge_landed.delay(
                repository.id, target_branch, old_tip, new_tip, ids
            )
        )


def cascade_merge_landed(
    *,
    repository_id: int,
    target_branch: str,
    old_tip: str,
    new_tip: str,
    merge_request_ids: list[int],
) -> list[Notification]:
    """Tell every rig with work still to do on `target_branch` (`cascade_audience`) what this
    landing means for it, as the current state of its open notices."""
    repository = Repository.objects.get(pk=repository_id)
    merge_requests = list(
        MergeRequest.objects.filter(id__in=merge_request_ids).select_related("rig")
    )
    change = landing.landed_change_read(
        repository=repository, target_branch=target_branch, old_tip=old_tip, new_tip=new_tip
    )
    if not change.files:
        return []
    fault_point("cascade.reading")
    sources = [mr.rig for mr in merge_requests if mr.rig is not None]
    what = _describe(sources, target_branch)
    cascade, depth = _cascade_of(sources, merge_requests)
    primary = merge_requests[0] if merge_requests else None
    manifests = [p for p in change.paths if path_matches(p, MANIFEST_PATTERNS)]
    code_symbols = {
        p: s
        for p, s in change.symbols.items()
        if p.endswith(CODE_SUFFIXES) and not path_matches(p, TEST_PATTERNS)
    }
    # Git reads and rebases first (no transaction open), then all writes in one transaction.
    rigs = cascade_audience(repository_id=repository.id, exclude=[r.id for r in sources])
    told = [(rig, leg) for rig, leg in rigs if merge_target_for_rig(rig, leg) == target_branch]
    forecasts = landing.landed_change_forecasts(change, [rig for rig, _ in told])
    watched = {
        rig.id: [p for p in change.paths if path_matches(p, rig_watch_patterns(rig, leg))]
        for rig, leg in told
    }
    excerpts = landing.landed_change_excerpts(change, watched.values())
    impacts = []
    for rig, leg in told:
        forecast = forecasts[rig.id]
        rebased = not forecast.conflicts and _rebase_idle(repository, rig, new_tip)
        impacts.append(
            RigImpact(
                rig,
                leg,
                forecast.conflicts,
                forecast.behind,
                watched[rig.id],
                rebased,
                excerpts.get(tuple(watched[rig.id]), ""),
            )
        )
    common = {
        "source_rig": primary.rig if primary else None,
        "source_merge_request": primary,
        "source_commits": f"{old_tip}..{new_tip}",
        "cascade": cascade,
        "depth": depth,
    }
    now = timezone.now().isoformat()
    with transaction.atomic():
        # Read under lock what each rig was already told, so two landings at once each add
        # to the same notice instead of one overwriting the other's.
        open_notices = notices_open(rig_ids=[i.rig.id for i in impacts], topics=TOPICS, lock=True)
        items, rebased = [], []
        for impact in impacts:
            notices, was_rebased = _impact_notices(
                change, what, impact, manifests, open_notices.get(impact.rig.id, {}), now
            )
            if was_rebased:
                rebased.append(impact.rig.id)
            convoy_id = impact.leg.convoy_id if impact.leg else None
            items += [{"rig": impact.rig, "convoy_id": convoy_id, **n, **common} for n in notices]
        sent = notifications_send_many(items)
        if rebased:
            notices_resolve(
                notifications=Notification.objects.filter(rig_id__in=rebased, topic=TOPIC_BASE),
                resolution=f"Gas Town rebased the idle rig onto {target_branch} ({new_tip[:12]})",
            )
        sent.extend(cascade_follow_ups(change, what, code_symbols, common, rigs))
    return sent
